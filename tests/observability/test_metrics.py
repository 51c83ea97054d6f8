"""The Prometheus endpoints of real services, scraped over HTTP before and after a small flow (import a model
and a dataset, make a project, benchmark it): every counter and histogram moved by exactly what the flow did."""

from __future__ import annotations

import dataclasses
import time

import grpc
import pytest

from services.common.server import ServiceServer
from services.gateway.servicer import registrar as gateway_registrar
from tests.conftest import FRAMES
from tests.harness import tiny_project
from tests.observability.conftest import scrape
from workbench.client import WorkbenchClient, WorkbenchError
from workbench.v1 import benchmark_pb2, benchmark_pb2_grpc, common_pb2, gateway_pb2

GATEWAY, CONVERTER = "workbench.v1.GatewayService", "workbench.v1.ConverterService"
BENCHMARK = "workbench.v1.BenchmarkService"


def test_a_flow_moves_the_metrics_by_what_it_did(metered):
    client, servers = metered.client, metered.servers
    gateway_port, benchmark_port = servers["gateway"].metrics.port, servers["benchmark"].metrics.port
    assert gateway_port and benchmark_port and gateway_port != benchmark_port
    before = scrape(gateway_port)

    project = tiny_project(client, FRAMES[:4])
    job = client.wait_job(client.benchmark_project(project.id, common_pb2.BenchmarkConfig(
        duration_seconds=0.5, random_inputs=True)).id)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED
    with pytest.raises(WorkbenchError) as missing:
        client.get_project("prj_not-an-id")
    assert missing.value.code == grpc.StatusCode.INVALID_ARGUMENT

    # a blocking stream its caller leaves half read (a worker call the gateway cancels, here made directly): counted
    # once grpc closes it, as CANCELLED, and its slot is free again
    with grpc.insecure_channel(servers["benchmark"].address) as channel:
        measuring = benchmark_pb2_grpc.BenchmarkServiceStub(channel).Benchmark(
            benchmark_pb2.BenchmarkRequest(model=client.get_model(project.model_id).artifact,
                                           config=common_pb2.BenchmarkConfig(duration_seconds=30, random_inputs=True)),
            metadata=[("authorization", "Bearer internal")], timeout=60)
        assert next(measuring).WhichOneof("event") == "progress"
        measuring.cancel()
        _eventually(lambda: moved_since(before, gateway_port, "workbench_rpc_requests_total", service=BENCHMARK,
                                        method="Benchmark", code="CANCELLED") == 1)

    # a worker refuses calls without the internal token: counted under the method and UNAUTHENTICATED; a
    # made-up method gets no series of its own (callers cannot grow the metrics), only "unknown"
    with grpc.insecure_channel(servers["converter"].address) as channel:
        for method in ("/workbench.v1.ConverterService/AnalyzeModel", "/workbench.v1.ConverterService/Made_up"):
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary(method)(b"", timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    after = scrape(benchmark_port)  # in-process, every service shares the registry; this is another endpoint
    assert not [name for name, _ in after if name.endswith("_created")]  # a series each that nothing reads

    def moved(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    # RPCs by service, method and code: the gateway's, the workers' (streams, counted when they end), a failure
    assert moved("workbench_rpc_requests_total", service=GATEWAY, method="CreateProject", code="OK") == 1
    assert moved("workbench_rpc_requests_total", service=GATEWAY, method="BenchmarkProject", code="OK") == 1
    assert moved("workbench_rpc_requests_total", service=GATEWAY, method="GetProject", code="INVALID_ARGUMENT") == 1
    assert moved("workbench_rpc_requests_total", service=GATEWAY, method="GetProject", code="OK") == 0
    # the client watched each of its three jobs to its end: non-blocking streams, counted when they closed (the
    # SDK leaves once it has the terminal event, often before the gateway closes the stream: then CANCELLED)
    _eventually(lambda: sum(moved_since(before, gateway_port, "workbench_rpc_requests_total", service=GATEWAY,
                                        method="WatchJob", code=code) for code in ("OK", "CANCELLED")) == 3)
    assert moved("workbench_rpc_requests_total", service=CONVERTER, method="ConvertModel", code="OK") == 1
    assert moved("workbench_rpc_requests_total", service=CONVERTER, method="AnalyzeModel", code="UNAUTHENTICATED") == 1
    assert moved("workbench_rpc_requests_total", service="unknown", method="unknown", code="UNAUTHENTICATED") == 1
    assert not [key for key in after if "Made_up" in str(key)]
    assert moved("workbench_rpc_requests_total", service=BENCHMARK, method="Benchmark", code="OK") == 1
    assert moved("workbench_rpc_duration_seconds_count", service=GATEWAY, method="CreateProject") == 1
    assert moved("workbench_rpc_duration_seconds_count", service=GATEWAY, method="GetProject") == 1
    assert moved("workbench_rpc_duration_seconds_count", service=BENCHMARK, method="Benchmark") == 2  # one cancelled
    # the benchmark stream's latency covers its measuring (0.5 s at least)
    assert moved("workbench_rpc_duration_seconds_sum", service=BENCHMARK, method="Benchmark") >= 0.5

    # jobs: one of each kind succeeded, each waited and ran once; none left in the queue
    for kind in ("import_model", "import_dataset", "benchmark"):
        assert moved("workbench_jobs_finished_total", kind=kind, state="succeeded") == 1, kind
        assert moved("workbench_job_duration_seconds_count", kind=kind) == 1, kind
        assert moved("workbench_job_queue_wait_seconds_count", kind=kind) == 1, kind
    assert moved("workbench_jobs_finished_total", kind="benchmark", state="failed") == 0
    assert moved("workbench_job_duration_seconds_sum", kind="benchmark") >= 0.5
    assert after.value("workbench_jobs_queued") == 0 and after.value("workbench_jobs_running") == 0

    # the benchmark worker's two slots, none busy once it answered; the project's FPS is its benchmark's
    assert after.value("workbench_worker_slots", service="benchmark") == 2
    assert after.value("workbench_worker_slots_busy", service="benchmark") == 0
    assert after.value("workbench_benchmark_fps", project_id=project.id) == pytest.approx(
        job.output.benchmark.throughput_fps)
    assert job.output.benchmark.throughput_fps > 0

    # S3 and the catalog: requests and transactions were timed, each counted once in its histogram
    puts = moved("workbench_s3_requests_total", operation="PutObject", status="200")
    assert puts >= 3  # the uploaded weights, the converted model, the frames at least
    assert after.total("workbench_s3_request_duration_seconds_count", operation="PutObject") - before.total(
        "workbench_s3_request_duration_seconds_count", operation="PutObject") == puts
    writes = moved("workbench_db_transaction_duration_seconds_count", mode="write")
    assert writes >= 6  # three submits and three ends, at least
    assert moved("workbench_db_statement_duration_seconds_count", statement="INSERT") >= 6


def test_the_queue_depth_counts_the_catalog(s3_settings):
    """A gateway that runs no jobs (max_jobs 0): a submitted job shows in workbench_jobs_queued until it is
    cancelled, then counts as a cancelled job of its kind."""
    settings = dataclasses.replace(s3_settings, listen="127.0.0.1:0", grace_seconds=1.0, max_jobs=0,
                                   metrics_listen="127.0.0.1:0")
    server = ServiceServer("gateway", settings, gateway_registrar(settings))
    server.start()
    client = WorkbenchClient(server.address, timeout=30)
    try:
        before = scrape(server.metrics.port)
        job = client.import_dataset("two frames", FRAMES[:2])
        queued = scrape(server.metrics.port)
        assert queued.value("workbench_jobs_queued") == before.value("workbench_jobs_queued") + 1 == 1
        assert queued.value("workbench_jobs_running") == 0
        # a watch of it the client gives up on (WatchJob holds no thread: counted when grpc says it ended)
        watch = client.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.id), timeout=30)
        assert next(watch).event.job_id == job.id
        watch.cancel()
        _eventually(lambda: moved_since(before, server.metrics.port, "workbench_rpc_requests_total",
                                        service=GATEWAY, method="WatchJob", code="CANCELLED") == 1)
        client.cancel_job(job.id)
        after = scrape(server.metrics.port)
        assert after.value("workbench_jobs_queued") == 0
        assert (after.value("workbench_jobs_finished_total", kind="import_dataset", state="cancelled")
                - before.value("workbench_jobs_finished_total", kind="import_dataset", state="cancelled")) == 1
        # it never ran: no wait ended by a claim, no duration
        for histogram in ("workbench_job_queue_wait_seconds_count", "workbench_job_duration_seconds_count"):
            assert after.value(histogram, kind="import_dataset") == before.value(histogram, kind="import_dataset")
    finally:
        client.close()
        server.shutdown(grace=0)
    with pytest.raises(OSError):  # the endpoint went with the server
        scrape(server.metrics.port)


def moved_since(before, port: int, name: str, **labels: str) -> float:
    return scrape(port).value(name, **labels) - before.value(name, **labels)


def _eventually(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def test_metrics_are_off_without_a_listen_address(s3_settings):
    settings = dataclasses.replace(s3_settings, listen="127.0.0.1:0", grace_seconds=0.0)
    server = ServiceServer("gateway", settings, gateway_registrar(settings))
    server.start()
    try:
        assert server.metrics is None
    finally:
        server.shutdown(grace=0)
