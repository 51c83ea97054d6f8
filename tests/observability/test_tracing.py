"""One trace per request, with tracing on into memory and every service in-process: a client's span, the
gateway's RPC, the optimize job it queued (run later, on the job thread), the quantizer's RPC and its S3
requests all share one trace id, which the job carries and its log lines name."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from services.common import logs
from tests.conftest import FRAMES, running_workbench
from tests.harness import ONE_CALIBRATION, tiny_project
from workbench.v1 import common_pb2

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def traced(spans, s3_settings):
    """Every service in-process, made after tracing was turned on (the `spans` fixture)."""
    with running_workbench(s3_settings) as running:
        yield running


@pytest.fixture
def job_log():
    """The JSON lines the gateway's job runner writes at INFO during the test."""
    buffer, logger = io.StringIO(), logging.getLogger("services.gateway.jobs")
    handler, level = logging.StreamHandler(buffer), logger.level
    handler.setFormatter(logs._Formatter("gateway", "json", []))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_an_optimize_job_is_one_trace_from_the_client_to_the_worker_and_its_s3_calls(spans, traced, job_log):
    client = traced.client
    parent = tiny_project(client, FRAMES)
    spans.clear()

    with trace.get_tracer("test").start_as_current_span("client: optimize") as root:
        submitted = client.optimize_project(parent.id, ONE_CALIBRATION)
    job = client.wait_job(submitted.id)  # outside the span: watching is a request of its own
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error
    trace_id = root.get_span_context().trace_id
    assert submitted.trace_id == job.trace_id == trace.format_trace_id(trace_id)

    deadline = time.monotonic() + 10  # the job's span ends just after the job's end is stored and watchers told
    while not any(s.name == "job JOB_KIND_OPTIMIZE" for s in spans.get_finished_spans()):
        assert time.monotonic() < deadline, "the job's span never ended"
        time.sleep(0.05)
    ours = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in ours}

    def only(name: str):
        found = [s for s in ours if s.name == name]
        assert len(found) == 1, (name, sorted(s.name for s in ours))
        return found[0]

    def parent_of(span):
        return by_id.get(span.parent.span_id) if span.parent else None

    rpc = only("workbench.v1.GatewayService/OptimizeProject")
    run = only("job JOB_KIND_OPTIMIZE")
    worker = only("workbench.v1.QuantizerService/Quantize")
    assert rpc.kind == worker.kind == SpanKind.SERVER
    assert parent_of(rpc) is by_id[root.get_span_context().span_id]
    assert parent_of(run) is rpc and run.attributes["workbench.job_id"] == job.id
    assert parent_of(worker) is run and worker.attributes["rpc.grpc.status_code"] == "OK"
    # the worker's S3 requests (reading the model and images, writing the child) are spans under its RPC
    worker_s3 = [s for s in ours if s.name.startswith("S3 ") and parent_of(s) is worker]
    assert {"S3 GetObject", "S3 PutObject"} <= {s.name for s in worker_s3}, sorted(s.name for s in ours)
    # nothing in the trace hangs loose: every span leads up to the client's
    for span in ours:
        while parent_of(span) is not None:
            span = parent_of(span)
        assert span.name == "client: optimize"

    # the job's log line names it and its trace, though nothing passed them to the logger
    ended = [line for line in job_log() if f"job {job.id} ended as JOB_STATE_SUCCEEDED" in line["msg"]]
    assert len(ended) == 1 and ended[0]["job_id"] == job.id and ended[0]["trace_id"] == job.trace_id, ended


def test_health_checks_and_reflection_are_not_traced(spans, traced):
    """A kubelet probes every pod every few seconds: those calls would each be a trace of one span."""
    project = traced.client.create_project("probed")
    with grpc.insecure_channel(traced.servers["gateway"].address) as channel:
        assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status == \
            health_pb2.HealthCheckResponse.SERVING
        listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        assert next(listing).list_services_response.service
    traced.client.get_project(project.id)

    names = [span.name for span in spans.get_finished_spans() if span.kind == SpanKind.SERVER]
    assert "workbench.v1.GatewayService/GetProject" in names, names
    assert not [name for name in names if name.startswith(("grpc.health", "grpc.reflection"))], names


def test_without_tracing_jobs_carry_no_trace(workbench):
    """No TracerProvider installed (the default): no trace id on jobs, nothing stored to resume."""
    job = workbench.client.import_dataset("two frames", FRAMES[:2])
    assert job.trace_id == ""
    assert workbench.client.wait_job(job.id).trace_id == ""


PROBE = """
import sys
import services.gateway.servicer, services.converter.__main__, services.quantizer.__main__
import services.benchmark.__main__, services.accuracy.__main__
from services.common.telemetry import tracing
configured = tracing.configure("gateway")
print(configured, tracing.tracer() is not None, "opentelemetry.sdk.trace" in sys.modules)
"""


@pytest.mark.parametrize(("endpoint", "expected"), [(None, "False False False"),
                                                    ("http://127.0.0.1:4317", "True True True")])
def test_tracing_is_on_only_with_an_otlp_endpoint(endpoint, expected):
    """Off (the default), a service never even loads the OpenTelemetry SDK; an OTLP endpoint installs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected
