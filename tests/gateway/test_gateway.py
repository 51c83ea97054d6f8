"""The gateway over real gRPC on ephemeral ports and a real SeaweedFS."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.server import ServiceServer
from services.gateway import records
from services.gateway.servicer import registrar
from tests.gateway.conftest import start_gateway
from workbench.client import JobFailedError, WorkbenchClient, WorkbenchError
from workbench.v1 import (
    accuracy_pb2_grpc, benchmark_pb2_grpc, common_pb2, converter_pb2_grpc,
    gateway_pb2, quantizer_pb2_grpc,
)

REPO = Path(__file__).resolve().parents[2]


def write_random_file(path: Path, size: int) -> str:
    digest, block = hashlib.sha256(), os.urandom(1024 * 1024)
    with path.open("wb") as f:
        for offset in range(0, size, len(block)):
            chunk = block[: min(len(block), size - offset)]
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def presigned_upload(client: WorkbenchClient, path: Path) -> gateway_pb2.CreateUploadResponse:
    created = client.stub.CreateUpload(
        gateway_pb2.CreateUploadRequest(file_name=path.name, size=path.stat().st_size, request_id=path.name)
    )
    with path.open("rb") as f:
        put = urllib.request.Request(created.upload_url, data=f, method="PUT")
        put.add_header("Content-Length", str(path.stat().st_size))
        urllib.request.urlopen(put, timeout=60).close()
    return created


# -- projects ---------------------------------------------------------------------------------


def test_project_crud_and_pagination(gateway):
    made = [gateway.create_project(f"p{i}") for i in range(5)]
    assert gateway.get_project(made[2].id) == made[2]
    page = gateway.stub.ListProjects(gateway_pb2.ListProjectsRequest(page_size=2))
    assert [p.id for p in page.projects] == [made[4].id, made[3].id] and page.next_page_token  # newest first
    assert [p.id for p in gateway.list_projects(page_size=2)] == [p.id for p in reversed(made)]
    assert [p.id for p in gateway.list_projects(page_size=2, oldest_first=True)] == [p.id for p in made]
    gateway.delete_project(made[0].id)
    with pytest.raises(WorkbenchError) as err:
        gateway.get_project(made[0].id)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_create_project_is_idempotent_by_request_id(gateway):
    first = gateway.create_project("same", request_id="req-1")
    again = gateway.create_project("same", request_id="req-1")
    assert first.id == again.id
    assert sum(p.name == "same" for p in gateway.list_projects()) == 1


def test_project_survives_gateway_restart(gateway_settings):
    server, client = start_gateway(gateway_settings)
    project = client.create_project("durable", device="CPU")
    client.close()
    server.shutdown(grace=1)
    server, client = start_gateway(gateway_settings)
    try:
        assert client.get_project(project.id) == project
    finally:
        client.close()
        server.shutdown(grace=1)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.stub.CreateProject(gateway_pb2.CreateProjectRequest(name="")), "name"),
        (lambda c: c.stub.GetProject(gateway_pb2.GetProjectRequest(project_id="../etc/passwd")), "project_id"),
        (lambda c: c.stub.ListProjects(gateway_pb2.ListProjectsRequest(page_size=-1)), "page_size"),
        (lambda c: c.stub.ListProjects(gateway_pb2.ListProjectsRequest(page_token="!!")), "page_token"),
        (lambda c: c.stub.CreateUpload(gateway_pb2.CreateUploadRequest(file_name="a/b.weights")), "file_name"),
        (lambda c: c.stub.CreateProject(gateway_pb2.CreateProjectRequest(name="x", model_id="nope")), "model_id"),
    ],
)
def test_malformed_requests_name_the_field(gateway, call, field):
    with pytest.raises(grpc.RpcError) as err:
        call(gateway)
    error = WorkbenchError.from_rpc_error(err.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field == field


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_project("prj-00000000000deadbeef"),
        lambda c: c.get_job("job-00000000000deadbeef"),
        lambda c: c.cancel_job("job-00000000000deadbeef"),
        lambda c: list(c.watch_job("job-00000000000deadbeef")),
        lambda c: c.get_upload("upl-00000000000deadbeef"),
        lambda c: c.stub.GetModel(gateway_pb2.GetModelRequest(model_id="mdl-00000000000deadbeef")),
        lambda c: c.create_project("x", dataset_id="dst-00000000000deadbeef"),
    ],
)
def test_unknown_ids_are_not_found(gateway, call):
    with pytest.raises((WorkbenchError, grpc.RpcError)) as err:
        call(gateway)
    error = err.value if isinstance(err.value, WorkbenchError) else WorkbenchError.from_rpc_error(err.value)
    assert error.code == grpc.StatusCode.NOT_FOUND


# -- uploads and jobs -------------------------------------------------------------------------


def test_streamed_upload_is_hashed_on_the_way(gateway, tmp_path):
    path = tmp_path / "model.weights"
    sha = write_random_file(path, 5 * 1024 * 1024 + 123)
    upload = gateway.upload_file(path)
    assert upload.state == gateway_pb2.UPLOAD_STATE_READY
    assert (upload.object.size, upload.object.sha256) == (path.stat().st_size, sha)
    assert upload.file_name == "model.weights" and upload.object.key == f"uploads/{upload.id}/data"


def test_streamed_upload_over_the_limit_is_refused_and_not_stored(gateway_settings, tmp_path, store):
    settings = dataclasses.replace(gateway_settings, max_upload_bytes=1024 * 1024)
    server, client = start_gateway(settings)
    path = tmp_path / "big.bin"
    write_random_file(path, 3 * 1024 * 1024)
    try:
        with pytest.raises(WorkbenchError) as err:
            client.upload_file(path)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not [r for r in store.list(settings.bucket, "uploads/") if r.key.endswith("/data")]
    finally:
        client.close()
        server.shutdown(grace=1)


def test_stream_without_header_is_invalid(gateway):
    with pytest.raises(grpc.RpcError) as err:
        gateway.stub.UploadFile(iter([gateway_pb2.UploadFileRequest(chunk=b"x")]))
    assert WorkbenchError.from_rpc_error(err.value).field == "header"


def test_watch_job_delivers_every_event_in_order(gateway, tmp_path):
    path = tmp_path / "weights.bin"
    sha = write_random_file(path, 40 * 1024 * 1024)
    created = presigned_upload(gateway, path)
    job = gateway.stub.CompleteUpload(gateway_pb2.CompleteUploadRequest(upload_id=created.upload.id)).job
    events = list(gateway.watch_job(job.id))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[0].state == common_pb2.JOB_STATE_QUEUED
    assert events[-1].state == common_pb2.JOB_STATE_SUCCEEDED and events[-1].job.output.upload_id
    fractions = [e.progress.fraction for e in events if e.progress.stage == "hashing"]
    assert len(fractions) >= 3 and fractions == sorted(fractions) and fractions[-1] == 1.0
    # A late watcher replays the same events, and one resuming after sequence 2 gets the rest.
    assert list(gateway.watch_job(job.id)) == events
    assert list(gateway.watch_job(job.id, after_sequence=2)) == events[2:]
    upload = gateway.get_upload(created.upload.id)
    assert upload.state == gateway_pb2.UPLOAD_STATE_READY and upload.object.sha256 == sha


def test_cancel_job_stops_a_running_job(gateway, tmp_path, store, gateway_settings):
    path = tmp_path / "huge.bin"
    write_random_file(path, 200 * 1024 * 1024)
    created = presigned_upload(gateway, path)
    job = gateway.stub.CompleteUpload(gateway_pb2.CompleteUploadRequest(upload_id=created.upload.id)).job
    events = gateway.watch_job(job.id)
    for event in events:
        if event.state == common_pb2.JOB_STATE_RUNNING and event.progress.stage == "hashing":
            gateway.cancel_job(job.id)
            break
    last = list(events)[-1]
    assert last.state == common_pb2.JOB_STATE_CANCELLED
    assert last.progress.fraction < 1.0
    with pytest.raises(JobFailedError):
        gateway.wait_job(job.id)
    assert gateway.get_upload(created.upload.id).state == gateway_pb2.UPLOAD_STATE_FAILED
    assert not store.exists(gateway_settings.bucket, created.upload.object.key)
    with pytest.raises(WorkbenchError) as err:
        gateway.cancel_job(job.id)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_job_running_when_the_gateway_dies_is_resumed_by_the_next_one(gateway_settings, tmp_path):
    """kill -9 a gateway process mid-job; once its lease runs out, the next gateway runs the job to its end."""
    gateway_settings = dataclasses.replace(gateway_settings, job_lease_seconds=2.0)
    env = {**os.environ, **{f"WORKBENCH_{k.upper()}": str(v) for k, v in gateway_settings.__dict__.items()}}
    env["WORKBENCH_LISTEN"] = "127.0.0.1:0"
    port_file = tmp_path / "port"
    script = (
        "import sys; from services.common.server import ServiceServer; from services.common.settings import Settings;"
        "from services.gateway.servicer import registrar; s = Settings.from_env();"
        "srv = ServiceServer('gateway', s, registrar(s)); p = srv.start();"
        f"open({str(port_file)!r}, 'w').write(str(p)); srv.wait()"
    )
    process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        client = WorkbenchClient(f"127.0.0.1:{port_file.read_text()}", timeout=20)
        path = tmp_path / "slow.bin"
        sha = write_random_file(path, 200 * 1024 * 1024)
        created = presigned_upload(client, path)
        job = client.stub.CompleteUpload(gateway_pb2.CompleteUploadRequest(upload_id=created.upload.id)).job
        for event in client.watch_job(job.id):
            if event.state == common_pb2.JOB_STATE_RUNNING:
                break
        client.close()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    server, client = start_gateway(gateway_settings)
    try:
        events = list(client.watch_job(job.id))
        assert events[-1].state == common_pb2.JOB_STATE_SUCCEEDED, events[-1].job.error
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert any("resumed (attempt 2)" in e.progress.message for e in events)
        upload = client.get_upload(created.upload.id)
        assert upload.state == gateway_pb2.UPLOAD_STATE_READY and upload.object.sha256 == sha
    finally:
        client.close()
        server.shutdown(grace=1)


def test_hundreds_of_watchers_hold_no_server_threads(gateway_settings, tmp_path):
    """300 WatchJob streams on a gateway with 4 server threads: unary calls still answer at once, and
    every watcher gets the job's end."""
    settings = dataclasses.replace(gateway_settings, max_workers=4, max_jobs=0)  # max_jobs=0: jobs stay queued
    server, client = start_gateway(settings)
    try:
        path = tmp_path / "small.bin"
        write_random_file(path, 1024)
        created = presigned_upload(client, path)
        job = client.stub.CompleteUpload(gateway_pb2.CompleteUploadRequest(upload_id=created.upload.id)).job
        streams = [client.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.id), timeout=60) for _ in range(300)]
        assert all(next(stream).event.state == common_pb2.JOB_STATE_QUEUED for stream in streams)
        started = time.monotonic()
        assert client.get_job(job.id).state == common_pb2.JOB_STATE_QUEUED
        assert time.monotonic() - started < 5  # a thread was free for it
        client.cancel_job(job.id)
        ends = [[r.event.state for r in stream] for stream in streams]
        assert ends == [[common_pb2.JOB_STATE_CANCELLED]] * 300
    finally:
        client.close()
        server.shutdown(grace=1)


# -- auth, reflection, the worker services ---------------------------------------------------


def test_auth_token_required_when_configured(gateway_settings):
    settings = dataclasses.replace(gateway_settings, auth_token="s3cret-token")
    server, client = start_gateway(settings)
    try:
        assert client.create_project("with token").name == "with token"
        anonymous = WorkbenchClient(server.address, token="")
        with pytest.raises(WorkbenchError) as err:
            list(anonymous.list_projects())
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert "s3cret-token" not in err.value.message
        with pytest.raises(WorkbenchError) as err:
            list(WorkbenchClient(server.address, token="wrong").list_projects())
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert anonymous.health() == "SERVING"  # probes need no token
    finally:
        client.close()
        server.shutdown(grace=1)


WORKERS = [
    ("converter", converter_pb2_grpc.add_ConverterServiceServicer_to_server, converter_pb2_grpc.ConverterServiceServicer),
    ("quantizer", quantizer_pb2_grpc.add_QuantizerServiceServicer_to_server, quantizer_pb2_grpc.QuantizerServiceServicer),
    ("benchmark", benchmark_pb2_grpc.add_BenchmarkServiceServicer_to_server, benchmark_pb2_grpc.BenchmarkServiceServicer),
    ("accuracy", accuracy_pb2_grpc.add_AccuracyServiceServicer_to_server, accuracy_pb2_grpc.AccuracyServiceServicer),
]


def _reflected_services(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        return {s.name for r in responses for s in r.list_services_response.service}


def test_every_service_serves_health_and_reflection(gateway_settings):
    import importlib

    servers = [ServiceServer("gateway", gateway_settings, registrar(gateway_settings))]
    for name, *_ in WORKERS:
        module = importlib.import_module(f"services.{name}.__main__")
        register = module.registrar(gateway_settings) if hasattr(module, "registrar") else module.register
        servers.append(ServiceServer(name, gateway_settings, register))
    try:
        for server in servers:
            server.start()
            services = _reflected_services(server.address)
            assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
            assert f"workbench.v1.{server.service_name.capitalize()}Service" in services
            with grpc.insecure_channel(server.address) as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for server in servers:
            server.shutdown(grace=0)


def test_ids_made_one_after_the_other_increase_within_a_millisecond_and_across_a_clock_step_back(monkeypatch):
    now = [1_700_000_000.0]
    monkeypatch.setattr(records.time, "time", lambda: now[0])
    same_millisecond = [records.new_id("prj") for _ in range(1000)]
    now[0] -= 5  # an NTP step back
    after_the_step = [records.new_id("prj") for _ in range(10)]
    made = same_millisecond + after_the_step
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(records._ID.match(i) for i in made)
