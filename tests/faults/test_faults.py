"""Faults on real processes: services killed mid-job, the gateway restarted, the S3 server stopped,
clients that walk away, deadlines. Nothing finished is lost; everything works again afterwards."""

from __future__ import annotations

import os
import time

import grpc
import pytest

from services.reference_models import yolov4_tiny
from workbench.client import JobFailedError, WorkbenchClient, WorkbenchError
from workbench.v1 import benchmark_pb2, benchmark_pb2_grpc, common_pb2, gateway_pb2

from tests.faults.conftest import DATA
from tests.harness import ONE_CALIBRATION

QUICK_BENCHMARK = common_pb2.BenchmarkConfig(duration_seconds=4, random_inputs=True)


def start_job(faults, parent, service: str) -> common_pb2.Job:
    client = faults.client
    if service == "converter":
        files = yolov4_tiny()
        return client.import_darknet("tiny again", files.cfg, files.weights, files.names)
    if service == "quantizer":
        return client.optimize_project(parent.id, ONE_CALIBRATION)
    if service == "benchmark":
        return client.benchmark_project(parent.id, QUICK_BENCHMARK)
    return client.evaluate_project(parent.id)


# the first progress stage each worker streams once it has the work in hand
WORKING = {"converter": "convert", "quantizer": "statistics", "benchmark": "measure", "accuracy": "evaluate"}


def wait_for_stage(client: WorkbenchClient, job_id: str, stage: str) -> None:
    for event in client.watch_job(job_id):
        if event.progress.stage == stage:
            return
    raise AssertionError(f"job {job_id} ended before stage {stage!r}: {client.get_job(job_id)}")


def catalog(client: WorkbenchClient) -> tuple[set, set, set]:
    return ({p.id for p in client.list_projects()}, {m.id for m in client.list_models()},
            {d.id for d in client.list_datasets()})


@pytest.mark.parametrize("service", ["converter", "quantizer", "benchmark", "accuracy"])
def test_a_service_killed_mid_job_fails_the_job_naming_it_and_a_retry_succeeds(faults, parent, service):
    client = faults.client
    before, objects = catalog(client), faults.objects()
    job = start_job(faults, parent, service)
    wait_for_stage(client, job.id, WORKING[service])
    faults.kill(service)
    with pytest.raises(JobFailedError) as err:
        client.wait_job(job.id)
    failed = err.value.job
    assert failed.state == common_pb2.JOB_STATE_FAILED and failed.failed_service == service
    assert service in failed.error
    assert catalog(client) == before  # no half-made model, child project or report
    assert objects.items() <= faults.objects().items()  # nothing stored before was lost or changed

    faults.restore()
    retry = client.wait_job(start_job(faults, parent, service).id)
    assert retry.state == common_pb2.JOB_STATE_SUCCEEDED


def test_a_gateway_killed_mid_job_resumes_it_once_restarted_and_keeps_finished_work(faults, parent):
    client = faults.client
    finished = list(client.list_jobs())
    before, objects = catalog(client), faults.objects()
    running = client.benchmark_project(parent.id, common_pb2.BenchmarkConfig(duration_seconds=6, random_inputs=True))
    wait_for_stage(client, running.id, "measure")
    faults.kill("gateway")
    faults.restore()

    events = list(client.watch_job(running.id))  # the client's channel reconnects by itself
    assert events[-1].state == common_pb2.JOB_STATE_SUCCEEDED, events[-1].job.error
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert any("resumed (attempt 2)" in e.progress.message for e in events)
    assert client.get_project(parent.id).last_benchmark.throughput_fps > 0
    assert catalog(client) == before
    after = {job.id: job for job in client.list_jobs()}
    assert all(after[job.id].state == job.state for job in finished)
    assert objects.items() <= faults.objects().items()


def test_s3_outage_mid_upload_is_unavailable_and_publishes_nothing(faults, tmp_path):
    client, objects = faults.client, faults.objects()
    chunk = os.urandom(1 << 20)

    def messages():
        yield gateway_pb2.UploadFileRequest(header=gateway_pb2.UploadFileHeader(
            file_name="big.bin", size=64 * len(chunk), request_id="outage-upload"))
        for i in range(64):
            if i == 8:
                faults.stop_s3()
            yield gateway_pb2.UploadFileRequest(chunk=chunk)

    with pytest.raises(grpc.RpcError) as err:
        client.stub.UploadFile(messages(), timeout=120)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(WorkbenchError) as err:  # every call that needs storage says so while it is gone
        client.upload_file(DATA / "images" / "dog.jpg")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert client.create_project("during the outage").id  # the catalog does not need the object store
    assert client.health() == "SERVING"

    faults.restore()
    after = faults.objects()
    assert objects.items() <= after.items()
    assert not [key for key in after if key not in objects and key.startswith("uploads/")]
    photo = DATA / "images" / "dog.jpg"
    assert client.upload_file(photo).object.size == photo.stat().st_size


def test_s3_outage_mid_quantization_fails_the_job_and_nothing_half_made_remains(faults, parent):
    client = faults.client
    before, objects = catalog(client), faults.objects()
    job = client.optimize_project(parent.id, ONE_CALIBRATION)
    wait_for_stage(client, job.id, "statistics")
    faults.stop_s3()
    ended = list(client.watch_job(job.id))[-1]
    assert ended.state == common_pb2.JOB_STATE_FAILED and ended.job.failed_service == "quantizer"
    assert client.get_job(job.id).state == common_pb2.JOB_STATE_FAILED

    faults.restore()
    assert catalog(client) == before
    after = faults.objects()
    assert objects.items() <= after.items()
    assert not [key for key in after if key not in objects and key.startswith("models/")]
    retry = client.wait_job(client.optimize_project(parent.id, ONE_CALIBRATION).id)
    assert client.get_project(retry.output.project_id).parent_id == parent.id


def test_a_client_leaving_watch_job_does_not_stop_the_job(faults, parent):
    client = faults.client
    job = client.benchmark_project(parent.id, QUICK_BENCHMARK)
    stream = client.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.id))
    next(stream)
    stream.cancel()
    with pytest.raises(grpc.RpcError) as err:  # a deadline ends the watch, not the job
        for _ in client.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.id), timeout=0.5):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert client.wait_job(job.id).state == common_pb2.JOB_STATE_SUCCEEDED


def test_a_worker_call_past_its_deadline_stops_the_work(faults, parent):
    client, config = faults.client, faults.stack.config()
    stub = benchmark_pb2_grpc.BenchmarkServiceStub(grpc.insecure_channel(f"127.0.0.1:{config['ports']['benchmark']}"))
    request = benchmark_pb2.BenchmarkRequest(model=client.get_model(parent.model_id).artifact, config=common_pb2.
                                             BenchmarkConfig(duration_seconds=60, random_inputs=True))
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        for _ in stub.Benchmark(request, timeout=3, metadata=(("authorization", f"Bearer {config['internal_token']}"),)):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - start < 10
    # the worker gave its turn up with the call: the next measurement does not wait out the 60 s
    start = time.monotonic()
    client.wait_job(client.benchmark_project(parent.id, QUICK_BENCHMARK).id)
    assert time.monotonic() - start < 25
    with pytest.raises(grpc.RpcError) as err:  # a gateway call that waits on a worker, past its deadline
        client.stub.PreviewDataset(gateway_pb2.PreviewDatasetRequest(dataset_id=parent.dataset_id), timeout=0.05)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and client.health() == "SERVING"


def test_no_object_published_during_the_faults_was_lost(faults):
    """After the other fault tests, every object they saw published is still there. Run alone, it first
    publishes an upload and kills the object store under it, so the check has something to check."""
    if not faults.published:
        faults.client.upload_file(DATA / "images" / "dog.jpg")
        faults.objects()
        faults.stop_s3()
        faults.restore()
    assert faults.published and faults.lost() == []
