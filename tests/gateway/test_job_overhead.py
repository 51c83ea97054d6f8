"""What a job costs outside its work: claimed at once when submitted on this gateway, its stage timings in
its terminal event, and uploads streamed through the gateway stored with one PUT."""

from __future__ import annotations

import hashlib
import time

import pytest

from services.gateway import jobs as jobs_module
from services.gateway import uploads as uploads_module
from services.gateway.jobs import TERMINAL, JobContext, JobManager
from services.gateway.uploads import Uploads, _ChunkReader
from services.gateway.workers import follow
from workbench.v1 import common_pb2, converter_pb2, gateway_pb2

KIND = common_pb2.JOB_KIND_BENCHMARK
REQUEST = gateway_pb2.BenchmarkProjectRequest


def _last(manager: JobManager, job_id: str) -> common_pb2.JobEvent:
    return list(manager.watch(job_id))[-1]


def test_a_job_submitted_in_a_callers_transaction_is_claimed_at_once_after_its_commit(database, monkeypatch):
    monkeypatch.setattr(jobs_module, "CLAIM_POLL_S", 30.0)  # no poll would find it in time: only the wake-up
    manager = JobManager(database, lease_s=2.0)
    manager.register(KIND, REQUEST, lambda ctx, request: None)
    manager.start()
    try:
        time.sleep(0.2)  # the dispatcher is idle, waiting
        start = time.monotonic()
        with database.write() as tx:
            job = manager.submit(KIND, REQUEST(), tx=tx)
            time.sleep(0.3)  # the dispatcher woke before the commit and found nothing
        manager.wake()
        event = _last(manager, job.id)
        assert event.state == common_pb2.JOB_STATE_SUCCEEDED
        assert time.monotonic() - start < 5.0
    finally:
        manager.stop()


class _Call:
    """A streaming call as grpc gives it: its responses, and cancel(), which the manager's stop may call
    on a job that has already sent its terminal event but not yet left the running set."""

    def __init__(self, responses):
        self._responses = responses

    def __iter__(self):
        return self._responses

    def cancel(self) -> bool:
        return False


def test_the_terminal_event_says_where_the_jobs_time_went(database):
    def work(ctx: JobContext, request):
        def responses():
            time.sleep(0.2)  # the worker's set-up before its first answer
            yield converter_pb2.ConvertModelResponse(progress=common_pb2.Progress(stage="converting"))
            time.sleep(0.1)
            yield converter_pb2.ConvertModelResponse(model=common_pb2.ModelArtifact())
        follow(ctx, "converter", lambda _request: _Call(responses()), converter_pb2.ConvertModelRequest())
        time.sleep(0.1)  # the gateway's own part
        return None

    manager = JobManager(database, lease_s=2.0)
    manager.register(KIND, REQUEST, work)
    manager.start()
    try:
        job = manager.submit(KIND, REQUEST())
        event = _last(manager, job.id)
    finally:
        manager.stop()
    assert event.state in TERMINAL and event.state == common_pb2.JOB_STATE_SUCCEEDED
    stages = dict(event.job.progress.metrics)
    assert set(stages) >= {"job_queued_s", "job_claim_s", "job_run_s", "job_worker_s", "job_worker_first_response_s",
                           "job_records_s", "job_gateway_s"}
    assert 0.2 <= stages["job_worker_first_response_s"] < stages["job_worker_s"]
    assert 0.3 <= stages["job_worker_s"] < stages["job_run_s"]
    assert 0.1 <= stages["job_gateway_s"] < 1.0
    assert stages["job_queued_s"] < 1.0  # submitted here: claimed at once, not at the next poll
    # the stored job carries them too
    assert dict(manager.get(job.id).progress.metrics) == stages


class _Store:
    def __init__(self):
        self.calls: list[tuple[str, bytes]] = []

    def put_bytes(self, bucket, key, data):
        self.calls.append(("put_bytes", data))
        return ("ref", hashlib.sha256(data).hexdigest())

    def put_stream(self, bucket, key, stream, length=-1):
        data = b""
        while chunk := stream.read(3):
            data += chunk
        self.calls.append(("put_stream", data))
        return ("ref", hashlib.sha256(data).hexdigest())


def _chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield gateway_pb2.UploadFileRequest(chunk=data[i:i + size])


@pytest.mark.parametrize("size", [0, 10, 64])
def test_a_streamed_upload_within_the_buffer_is_stored_with_one_put(size, monkeypatch):
    monkeypatch.setattr(uploads_module, "BUFFERED_UPLOAD_BYTES", 64)
    uploads, store = Uploads.__new__(Uploads), _Store()
    uploads.store, uploads.bucket = store, "b"
    data = bytes(range(size))
    uploads._store_stream("k", _ChunkReader(_chunks(data, 7), 1000))
    assert store.calls == [("put_bytes", data)]


def test_a_larger_streamed_upload_is_staged_by_the_store_with_every_byte(monkeypatch):
    monkeypatch.setattr(uploads_module, "BUFFERED_UPLOAD_BYTES", 64)
    uploads, store = Uploads.__new__(Uploads), _Store()
    uploads.store, uploads.bucket = store, "b"
    data = bytes(range(200))
    uploads._store_stream("k", _ChunkReader(_chunks(data, 7), 1000))
    assert store.calls == [("put_stream", data)]
