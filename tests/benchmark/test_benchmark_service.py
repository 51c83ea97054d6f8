"""Benchmarks, sweeps and comparisons through the gateway and the benchmark service."""

from __future__ import annotations

import threading

import grpc
import pytest

from tests.small_models import small_classifier
from workbench import cli
from workbench.client import JobFailedError, WorkbenchError
from workbench.v1 import common_pb2

ONNX = common_pb2.MODEL_FILE_ROLE_MODEL


@pytest.fixture
def project(workbench, tmp_path):
    client = workbench.client
    small_classifier(tmp_path / "classifier.onnx")
    model = client.wait_job(client.import_model("classifier", {ONNX: tmp_path / "classifier.onnx"}).id)
    return client.create_project("classifier on CPU", model_id=model.output.model_id)


def short(seconds: float = 0.5, **kw) -> common_pb2.BenchmarkConfig:
    return common_pb2.BenchmarkConfig(duration_seconds=seconds, random_inputs=True, **kw)


def test_benchmark_job_records_the_result_on_the_project(workbench, project):
    client = workbench.client
    job = client.benchmark_project(project.id, short(performance_counters=True))
    result = client.wait_job(job.id).output.benchmark
    assert result.throughput_fps > 0 and result.latency.median_ms > 0 and result.conditions.cpu_model
    assert result.layer_counters and result.config.duration_seconds == 0.5
    assert client.get_project(project.id).last_benchmark == result
    # what made the figure: the model by sha256 (no dataset: random inputs), every setting, software, machine
    made = result.provenance
    model = client.get_model(project.model_id).artifact
    assert made.job_id == job.id and made.service == "benchmark"
    assert dict(made.inputs) == {"model.xml": model.xml, "model.bin": model.bin}
    assert made.config["duration_seconds"] == 0.5 and made.config["random_inputs"] is True
    assert made.versions["openvino"] and made.machine.cpu_model and made.machine.cpu_cores > 0
    figures = {f.name: f for f in client.project_provenance(project.id)}
    assert figures["benchmark.throughput_fps"].value == result.throughput_fps
    assert figures["benchmark.throughput_fps"].provenance == made
    # a retry with the same request_id returns the job it started, and starts no other
    assert client.benchmark_project(project.id, short(), request_id=job.request_id).id == job.id


def test_compare_projects_gives_ratios_and_layer_types(workbench, project):
    client = workbench.client
    other = client.create_project("same model, latency hint", model_id=project.model_id)
    for p, hint in ((project, common_pb2.PERFORMANCE_HINT_THROUGHPUT), (other, common_pb2.PERFORMANCE_HINT_LATENCY)):
        client.wait_job(client.benchmark_project(p.id, short(hint=hint, performance_counters=True)).id)
    comparison = client.compare_projects(project.id, other.id)
    a, b = comparison.first.last_benchmark, comparison.second.last_benchmark
    assert comparison.throughput_ratio == pytest.approx(b.throughput_fps / a.throughput_fps)
    assert "Convolution" in {t.layer_type for t in comparison.layer_types}
    assert not comparison.comparable and any(d.startswith("config hint") for d in comparison.differences)
    alike = client.create_project("same model, throughput hint", model_id=project.model_id)
    client.wait_job(client.benchmark_project(alike.id, short(hint=common_pb2.PERFORMANCE_HINT_THROUGHPUT,
                                                             performance_counters=True)).id)
    same = client.compare_projects(project.id, alike.id)
    # alike in every input, setting, software and machine; only a busy machine may still make them unlike
    assert [d for d in same.differences if "disturbed" not in d] == []
    assert same.comparable == (not same.differences)
    fresh = client.create_project("never measured", model_id=project.model_id)
    with pytest.raises(WorkbenchError) as err:
        client.compare_projects(project.id, fresh.id)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and fresh.id in err.value.message


def test_sweep_job_returns_points_best_and_chart(workbench, project, store, tmp_path, capsys):
    client = workbench.client
    job = client.sweep_project(project.id, batches=[1, 2], streams=[1], latency_limit_ms=1000, base=short(0.3))
    sweep = client.wait_job(job.id).output.sweep
    assert len(sweep.points) == 2 and sweep.best_index in (0, 1) and sweep.best_within_latency_index in (0, 1)
    fastest = max(p.result.throughput_fps for p in sweep.points)
    near = [i for i, p in enumerate(sweep.points) if p.result.throughput_fps >= 0.95 * fastest]
    assert sweep.sweet_spot_index == min(near, key=lambda i: sweep.points[i].result.latency.median_ms)
    assert store.stat(sweep.chart.bucket, sweep.chart.key).size > 1000
    # the chart reaches a client without storage credentials, and the CLI writes it to a file
    assert client.sweep_chart(project.id).startswith(b"\x89PNG")
    chart = tmp_path / "grid.png"
    assert cli.main(["--address", workbench.servers["gateway"].address, "sweep", project.id, "--batches", "1",
                     "--duration", "0.3", "--random", "-o", str(chart)]) == 0
    assert chart.read_bytes().startswith(b"\x89PNG") and "sweet spot" in capsys.readouterr().out


def test_measurements_take_turns(workbench, project):
    client = workbench.client
    jobs = [client.benchmark_project(project.id, short(1.0)) for _ in range(2)]
    events: dict[int, list] = {0: [], 1: []}
    watchers = [threading.Thread(target=lambda i=i: events[i].extend(client.watch_job(jobs[i].id))) for i in (0, 1)]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        watcher.join()
    assert all(events[i][-1].state == common_pb2.JOB_STATE_SUCCEEDED for i in (0, 1))
    # both run at once on the gateway, so either may reach the worker first; the other waits for it
    waited = [i for i in (0, 1) if any(e.progress.stage == "queued" and "1 measurement ahead" in e.progress.message
                                       for e in events[i])]
    assert len(waited) == 1, {i: [(e.progress.stage, e.progress.message) for e in events[i]] for i in (0, 1)}
    first, second = events[1 - waited[0]], events[waited[0]]
    measured_until = max(e.time.ToNanoseconds() for e in first if e.progress.stage == "measure")
    # the gateway stamps each event as it arrives, and the two jobs' come over two streams: their order across
    # jobs holds to within delivery (CI once saw 5 ms). Measurements run at once would overlap by about 1 s
    skew_ns = 100_000_000
    assert min(e.time.ToNanoseconds() for e in second if e.progress.stage == "compile") >= measured_until - skew_ns


def test_bad_requests_are_refused(workbench, project, store):
    client = workbench.client
    with pytest.raises(WorkbenchError) as err:
        client.benchmark_project(project.id, short(seconds=-1))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.field == "config.duration_seconds"
    job = client.benchmark_project(project.id, short(device="NPU9"))
    with pytest.raises(JobFailedError, match="unknown device"):
        client.wait_job(job.id)
    assert client.wait_job(client.benchmark_project(project.id, short(batch=3)).id).output.benchmark.iterations
    model = client.get_model(project.model_id)
    store.delete(model.artifact.bin.bucket, model.artifact.bin.key)  # the model's weights vanish from storage
    with pytest.raises(JobFailedError) as failed:
        client.wait_job(client.benchmark_project(project.id, short()).id)
    assert failed.value.job.failed_service == "benchmark" and "not found" in failed.value.job.error.lower()
