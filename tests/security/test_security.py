"""System-level security tests: real gRPC servers on ephemeral ports, the session's real SeaweedFS.

What they hold the system to:
  * auth: every RPC of every service (walked from the generated descriptors, so a new RPC or a new
    service is covered the day it is added) refuses a missing or wrong credential; workers take only
    the internal credential, the gateway only the client one; health and reflection stay open;
  * TLS and mutual TLS end to end: client -> gateway -> worker over TLS, plaintext and certificate-less
    clients refused;
  * object keys are never built from hostile request strings (walked over every id/name-like field);
  * upload size limits and presigned URL expiry as a client meets them through the gateway;
  * no secret (tokens, S3 secret keys) in any log line or any error a client gets back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import pkgutil
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
import workbench.v1
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from workbench.client import WorkbenchClient, WorkbenchError
from workbench.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from services.common.interceptors import bearer_metadata
from services.common.object_store import ObjectStore
from services.common.server import ServiceServer
from services.common.settings import Settings
from services.gateway import uploads as gateway_uploads
from services.gateway.servicer import registrar as gateway_registrar
from tests.conftest import WORKERS as WORKER_NAMES
from tests.security.conftest import AUTH_TOKEN, INTERNAL_TOKEN, base_settings, start_system

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
IMAGES = [REPO / "data" / "images" / "dog.jpg", REPO / "data" / "images" / "eagle.jpg"]
OPEN_SERVICES = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: a call that got this far answers UNAVAILABLE


# -- the contract, walked from the generated modules -------------------------------------------


def _all_services() -> dict:
    """Every service declared in any workbench.v1 *_pb2 module: full name -> ServiceDescriptor."""
    found = {}
    for info in pkgutil.iter_modules(workbench.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"workbench.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                found[service.full_name] = service
    return found


SERVICES = _all_services()
METHODS = [(service, method) for service in SERVICES.values() for method in service.methods]
GATEWAY = SERVICES["workbench.v1.GatewayService"]


def server_of(service) -> str:
    """The component serving a service: workbench.v1.ConverterService -> "converter"."""
    return service.name.removesuffix("Service").lower()


def method_id(pair) -> str:
    return f"{pair[0].name}.{pair[1].name}"


def invoke(ch: grpc.Channel, service, method, request: bytes = b"", metadata=(), timeout: float = 10):
    """Call any RPC with a serialized request, picking the call shape from the descriptor.

    Returns (code, details, trailing metadata); OK when the call (and its whole stream) succeeded."""
    path = f"/{service.full_name}/{method.name}"
    shape = {
        (False, False): ch.unary_unary,
        (False, True): ch.unary_stream,
        (True, False): ch.stream_unary,
        (True, True): ch.stream_stream,
    }[(method.client_streaming, method.server_streaming)]
    call = shape(path)  # no serializers: requests and responses stay raw bytes
    payload = iter([request]) if method.client_streaming else request
    try:
        result = call(payload, timeout=timeout, metadata=metadata)
        if method.server_streaming:
            list(result)
        return grpc.StatusCode.OK, "", ()
    except grpc.RpcError as error:
        return error.code(), error.details() or "", tuple(error.trailing_metadata() or ())


def error_info(trailers) -> error_details_pb2.ErrorInfo | None:
    for key, value in trailers:
        if key == "grpc-status-details-bin":
            from google.rpc import status_pb2

            status = status_pb2.Status.FromString(value)
            for item in status.details:
                info = error_details_pb2.ErrorInfo()
                if item.Unpack(info):
                    return info
    return None


def own_token(service) -> str:
    return AUTH_TOKEN if server_of(service) == "gateway" else INTERNAL_TOKEN


def other_token(service) -> str:
    return INTERNAL_TOKEN if server_of(service) == "gateway" else AUTH_TOKEN


def reflected_services(ch: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    reply = next(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return {s.name for s in reply.list_services_response.service}


def health(ch: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status


# -- 1, 2: every RPC of every service needs the right credential --------------------------------


def test_the_walk_covers_every_served_service(authed_system, channels):
    """The descriptor walk below is complete: the servers serve exactly the walked services (plus the
    open health and reflection), and health and reflection answer without any token."""
    assert set(map(server_of, SERVICES.values())) == set(authed_system.servers) == {"gateway", *WORKER_NAMES}
    for name in authed_system.servers:
        ch = channels(authed_system.address(name))
        walked = {s.full_name for s in SERVICES.values() if server_of(s) == name}
        assert reflected_services(ch) == walked | OPEN_SERVICES, name
        assert health(ch) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service, method", METHODS, ids=map(method_id, METHODS))
def test_rpc_refuses_missing_and_wrong_credentials(authed_system, channels, service, method):
    ch = channels(authed_system.address(server_of(service)))
    refused = {
        "no token": (),
        "wrong token": bearer_metadata(f"wrong-{secrets.token_hex(8)}"),
        "right token, wrong scheme": (("authorization", f"Basic {own_token(service)}"),),
        "right token with a suffix": bearer_metadata(own_token(service) + "x"),
        # workers take only the internal credential; the gateway only the client one
        "the other side's token": bearer_metadata(other_token(service)),
    }
    outcomes = {label: invoke(ch, service, method, metadata=metadata)[:2] for label, metadata in refused.items()}
    wrong = {label: code for label, (code, _) in outcomes.items() if code != grpc.StatusCode.UNAUTHENTICATED}
    assert not wrong, f"{method.full_name} was not refused: {wrong}"
    for code, details in outcomes.values():
        assert own_token(service) not in details and other_token(service) not in details
    # the refusals are the credential's doing: with it, the same empty request gets past auth
    code, details, _ = invoke(ch, service, method, metadata=bearer_metadata(own_token(service)))
    assert code != grpc.StatusCode.UNAUTHENTICATED, details


def test_worker_call_with_internal_credential_works(authed_system, channels):
    """A real worker call: AnalyzeModel of a missing IR is NOT_FOUND with the internal token (it ran),
    UNAUTHENTICATED with the client token."""
    from workbench.v1 import converter_pb2, converter_pb2_grpc

    bucket = authed_system.settings.bucket
    request = converter_pb2.AnalyzeModelRequest()
    request.xml.bucket, request.xml.key = bucket, "models/none/model.xml"
    request.bin.bucket, request.bin.key = bucket, "models/none/model.bin"
    stub = converter_pb2_grpc.ConverterServiceStub(channels(authed_system.address("converter")))
    with pytest.raises(grpc.RpcError) as err:
        stub.AnalyzeModel(request, timeout=20, metadata=bearer_metadata(INTERNAL_TOKEN))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.AnalyzeModel(request, timeout=20, metadata=bearer_metadata(AUTH_TOKEN))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- 3: TLS and mutual TLS across the whole system ----------------------------------------------


def secure_settings(seaweed, bucket: str, certs, *, mutual: bool) -> Settings:
    return base_settings(seaweed, bucket, auth_token=AUTH_TOKEN, internal_token=INTERNAL_TOKEN,
                         tls_cert=certs.server_cert, tls_key=certs.server_key, tls_ca=certs.ca,
                         tls_client_ca=certs.ca if mutual else "")


def stream_upload(stub, path: Path, metadata) -> gateway_pb2.Upload:
    data = path.read_bytes()
    header = gateway_pb2.UploadFileHeader(file_name=path.name, size=len(data), request_id=secrets.token_hex(8))
    messages = [gateway_pb2.UploadFileRequest(header=header), gateway_pb2.UploadFileRequest(chunk=data)]
    return stub.UploadFile(iter(messages), timeout=30, metadata=metadata).upload


def import_two_images(stub, metadata) -> common_pb2.Job:
    """Gateway -> accuracy worker: upload two images through the gateway, import them as a dataset."""
    upload_ids = [stream_upload(stub, path, metadata).id for path in IMAGES]
    request = gateway_pb2.ImportDatasetRequest(name="two images", upload_ids=upload_ids,
                                               request_id=secrets.token_hex(8))
    job = stub.ImportDataset(request, timeout=30, metadata=metadata).job
    for response in stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.id), timeout=90, metadata=metadata):
        if response.event.state in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED,
                                    common_pb2.JOB_STATE_CANCELLED):
            break
    return stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.id), timeout=10, metadata=metadata).job


def refused_at_transport(ch: grpc.Channel) -> grpc.StatusCode:
    """The code a health check (open to all, no token needed) gets: UNAVAILABLE when the connection is refused."""
    with pytest.raises(grpc.RpcError) as err:
        health(ch)
    return err.value.code()


def test_tls_client_to_gateway_to_worker(seaweed, bucket, certs, channels):
    system = start_system(secure_settings(seaweed, bucket, certs, mutual=False))
    address = system.address("gateway")
    try:
        # the SDK speaks TLS to the gateway with a CA to trust
        with WorkbenchClient(address, token=AUTH_TOKEN, tls_ca=certs.ca, timeout=30) as client:
            assert client.create_project("over tls").name == "over tls"  # gateway only
            job = client.import_dataset("two images", IMAGES)  # gateway -> accuracy worker over TLS
            done = client.wait_job(job.id)
            dataset = client.get_dataset(done.output.dataset_id)
            assert dataset.artifact.summary.image_count == 2
            preview = client.stub.PreviewDataset(gateway_pb2.PreviewDatasetRequest(dataset_id=dataset.id),
                                                 timeout=30, metadata=bearer_metadata(AUTH_TOKEN))
            # a download URL the gateway hands out is time-limited (one hour at most) and works
            expires = urllib.parse.parse_qs(urllib.parse.urlsplit(preview.download_url).query)["X-Amz-Expires"]
            assert 0 < int(expires[0]) <= 3600
            with urllib.request.urlopen(preview.download_url, timeout=10) as body:
                assert body.read(8) == b"\x89PNG\r\n\x1a\n"
        # a plaintext client is refused by the gateway...
        assert refused_at_transport(channels(address)) == grpc.StatusCode.UNAVAILABLE
        # ...and by every worker, so the import above really went gateway -> worker over TLS
        for name in WORKER_NAMES:
            assert refused_at_transport(channels(system.address(name))) == grpc.StatusCode.UNAVAILABLE, name
            assert health(channels(system.address(name), ca=certs.ca)) == health_pb2.HealthCheckResponse.SERVING
        # a TLS client that does not trust the service's CA is refused too
        untrusting = channels(address, ca=certs.rogue_cert)  # trusts some other certificate, not the service's CA
        assert refused_at_transport(untrusting) == grpc.StatusCode.UNAVAILABLE
    finally:
        system.stop()


def test_mutual_tls_client_to_gateway_to_worker(seaweed, bucket, certs, channels):
    system = start_system(secure_settings(seaweed, bucket, certs, mutual=True))
    address = system.address("gateway")
    metadata = bearer_metadata(AUTH_TOKEN)
    try:
        with_cert = {"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_key}
        with WorkbenchClient(address, token=AUTH_TOKEN, tls_ca=certs.ca, tls_cert=certs.client_cert,
                             tls_key=certs.client_key, timeout=30) as client:
            assert client.create_project("over mtls").id.startswith("prj-")
        stub = gateway_pb2_grpc.GatewayServiceStub(channels(address, **with_cert))
        job = import_two_images(stub, metadata)  # the gateway presents its certificate to the worker
        assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error

        for name in ("gateway", *WORKER_NAMES):
            target = system.address(name)
            refused = {
                "plaintext": channels(target),
                "TLS without a client certificate": channels(target, ca=certs.ca),
                "a certificate from an untrusted CA": channels(target, ca=certs.ca, cert=certs.rogue_cert,
                                                               key=certs.rogue_key),
            }
            for label, ch in refused.items():
                assert refused_at_transport(ch) == grpc.StatusCode.UNAVAILABLE, (name, label)
        # the SDK without a client certificate is refused like any anonymous client
        with WorkbenchClient(address, token=AUTH_TOKEN, tls_ca=certs.ca, timeout=5, retry_attempts=2) as client:
            with pytest.raises(WorkbenchError) as err:
                client.create_project("anonymous")
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
        # TLS and tokens are separate locks: a worker reached with a good certificate still wants its token
        worker = channels(system.address("accuracy"), **with_cert)
        service = SERVICES["workbench.v1.AccuracyService"]
        code, _, _ = invoke(worker, service, service.methods[0], metadata=bearer_metadata(AUTH_TOKEN))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        system.stop()


# -- 4: object keys are never built from hostile request strings ---------------------------------

HOSTILE = [
    "../x", "prj-../../a", "/etc/passwd", "%2e%2e/x", "a/../../b", "x\x00y", "x" * 5000,
    "..", ".", "prj-0194f1c2a3b5e8d7c6a/../../x", "prj-0194f1c2a3b5e8d7c6a\n", "prj-0194F1C2A3B5E8D7C6A",
    "_tmp/x", "requests/project/x",
]
# every text field that names something: ids, request ids, page tokens (they decode to ids), file, display
# and class names
NAMING = re.compile(r"(^|_)(id|ids|token|name)$")
# keys the gateway makes itself, from ids it generated (records are rows in the catalog, not objects)
OWN_KEY = re.compile(r"^(datasets|uploads|reports|packages)/[a-z]{2,4}-[0-9a-f]{19}/.+$")


def may_accept(field: str, value: str) -> bool:
    """Whether a call may take this text in this field at all. Only ids the gateway issued are ids; a
    request_id is 1-128 of [A-Za-z0-9._:-]; a file name is a plain name, no folders or control characters;
    display names (up to 200 characters) and class-name filters are data, kept verbatim, never a key."""
    if field == "request_id":
        return re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", value) is not None
    if field == "file_name":
        return 0 < len(value) <= 255 and value not in (".", "..") and not re.search(r"[/\\\x00-\x1f]", value)
    if field == "name":
        return 0 < len(value.strip()) <= 200
    return field == "class_name"  # ids and page tokens: only what the gateway issued


def _string_fields(message, prefix=(), seen=()):
    """Paths (tuples of FieldDescriptors) to every string field of a request message, nested ones included."""
    for field in message.fields:
        path = (*prefix, field)
        if field.type == FieldDescriptor.TYPE_STRING:
            yield path
        elif (field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.file.package == "workbench.v1"
              and field.message_type.full_name not in seen):
            yield from _string_fields(field.message_type, path, (*seen, message.full_name))


def _repeated(field) -> bool:
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == FieldDescriptor.LABEL_REPEATED


def _assign(message, path, value: str) -> None:
    field, rest = path[0], path[1:]
    if not rest:
        if _repeated(field):
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
        return
    child = getattr(message, field.name).add() if _repeated(field) else getattr(message, field.name)
    _assign(child, rest, value)


def _request(method, path, value: str) -> bytes:
    """The method's request with `value` at `path`; the other text a request needs (name, file_name) is
    well-formed, so the hostile field is what the gateway has to judge."""
    request = getattr(gateway_pb2, method.input_type.name)()
    # the request itself, and a nested header that carries a file name (UploadFileRequest.header)
    holders = [request, *(getattr(request, f.name) for f in request.DESCRIPTOR.fields
                          if f.type == FieldDescriptor.TYPE_MESSAGE and not _repeated(f)
                          and "file_name" in f.message_type.fields_by_name)]
    for holder in holders:
        for field in holder.DESCRIPTOR.fields:
            if field.name in ("name", "file_name") and not _repeated(field):
                setattr(holder, field.name, "ok.bin" if field.name == "file_name" else "ok")
    _assign(request, path, value)
    return request.SerializeToString()


def _path_name(path) -> str:
    return ".".join(f.name + ("[]" if _repeated(f) else "") for f in path)


NAMING_FIELDS = [(method, path) for method in GATEWAY.methods for path in _string_fields(method.input_type)
                 if NAMING.search(path[-1].name)]


@pytest.fixture(scope="module")
def hostile_target(seaweed, seaweed_store):
    """A gateway (no auth; workers unreachable) over a bucket holding another project's objects and decoys."""
    bucket = f"sec-{uuid.uuid4().hex[:16]}"
    seaweed_store.ensure_bucket(bucket)
    settings = base_settings(seaweed, bucket, **{f"{name}_addr": UNREACHABLE for name in WORKER_NAMES})
    server = ServiceServer("gateway", settings, gateway_registrar(settings))
    server.start()
    ch = grpc.insecure_channel(server.address)
    stub = gateway_pb2_grpc.GatewayServiceStub(ch)
    victim = stub.CreateProject(gateway_pb2.CreateProjectRequest(name="victim"), timeout=10).project
    upload = stub.UploadFile(iter([
        gateway_pb2.UploadFileRequest(header=gateway_pb2.UploadFileHeader(file_name="victim.bin")),
        gateway_pb2.UploadFileRequest(chunk=b"the victim's bytes"),
    ]), timeout=10).upload
    # Decoys where a traversal would land ("projects/../x.json" is "x.json"...): each is a valid record, so
    # reading one would answer OK, which fails the tests, instead of hiding behind NOT_FOUND.
    decoy = {"id": "decoy", "name": "decoy", "project_id": victim.id}
    for key in ("x.json", "a.json", "b.json", "x/data", "b/data", "etc/passwd.json", "etc/passwd",
                *(f"{folder}/etc/passwd.json" for folder in ("projects", "models", "datasets", "uploads", "jobs",
                                                              "reports", "packages"))):
        seaweed_store.put_json(bucket, key, decoy)
    yield dataclasses.make_dataclass("Target", ["channel", "store", "bucket", "victim", "upload"])(
        ch, seaweed_store, bucket, victim, upload)
    ch.close()
    server.shutdown(grace=0)
    seaweed_store.delete_bucket(bucket)


def snapshot(store, bucket: str) -> dict[str, str]:
    """key -> sha256 of the content, staged objects included: what a write anywhere would change."""
    found = {}
    for item in store.client.list_objects(bucket, recursive=True):
        if not item.is_dir:
            response = store.client.get_object(bucket, item.object_name)
            try:
                found[item.object_name] = hashlib.sha256(response.read()).hexdigest()
            finally:
                response.close()
                response.release_conn()
    return found


def _hostile_values(target) -> list[str]:
    # also values built from real ids: the victim's own records are right there
    return [*HOSTILE, f"{target.victim.id}/../x", f"../projects/{target.victim.id}", f"{target.upload.id}/data",
            f"{target.victim.id}.json", f"{target.upload.id}/../{target.victim.id}"]


@pytest.mark.parametrize("method, path", NAMING_FIELDS, ids=[f"{m.name}.{_path_name(p)}" for m, p in NAMING_FIELDS])
def test_hostile_text_never_becomes_an_object_key(hostile_target, method, path):
    """Every hostile value is refused (INVALID_ARGUMENT, or NOT_FOUND for a well-formed id of nothing) by
    the gateway itself, before any key is built from it; a value the field legitimately takes (a display
    name, a well-formed request_id) may be accepted, but then only under keys the gateway made. No call
    fails inside, and no existing object (the victim project's, the decoys) is read back or changed."""
    field = path[-1].name
    before = snapshot(hostile_target.store, hostile_target.bucket)
    bad = {}
    for value in _hostile_values(hostile_target):
        code, details, trailers = invoke(hostile_target.channel, GATEWAY, method, _request(method, path, value))
        info = error_info(trailers)
        allowed = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
        if may_accept(field, value):
            allowed.add(grpc.StatusCode.OK)
        # INVALID_KEY is the object store's last-line check: the gateway had already built a key from the text
        if code not in allowed or (info is not None and info.reason == "INVALID_KEY"):
            bad[value[:40]] = (code.name, info.reason if info else "", details[:160])
    assert not bad, f"{method.name}.{_path_name(path)}: {bad}"
    after = snapshot(hostile_target.store, hostile_target.bucket)
    assert {key: after.get(key) for key in before} == before, "an existing object was changed or deleted"
    made = sorted(set(after) - set(before))
    assert all(OWN_KEY.match(key) for key in made), [key for key in made if not OWN_KEY.match(key)]


# -- 5: upload size limits (the streamed-over-the-limit case is in tests/gateway) -----------------


@pytest.fixture
def small_gateway(s3_settings):
    """A gateway on this test's bucket that accepts uploads of at most 1 MiB."""
    settings = dataclasses.replace(s3_settings, listen="127.0.0.1:0", grace_seconds=1.0, max_upload_bytes=1024 * 1024,
                                   **{f"{name}_addr": UNREACHABLE for name in WORKER_NAMES})
    server = ServiceServer("gateway", settings, gateway_registrar(settings))
    server.start()
    client = WorkbenchClient(server.address, timeout=20)
    yield client, settings
    client.close()
    server.shutdown(grace=0)


def test_declared_size_over_the_limit_is_refused_before_anything_is_stored(small_gateway, store):
    client, settings = small_gateway
    before = snapshot(store, settings.bucket)
    with pytest.raises(grpc.RpcError) as err:
        client.stub.CreateUpload(gateway_pb2.CreateUploadRequest(file_name="big.bin", size=1024 * 1024 + 1), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in err.value.details()
    header = gateway_pb2.UploadFileHeader(file_name="big.bin", size=1024 * 1024 + 1)
    with pytest.raises(grpc.RpcError) as err:  # refused on the header, before a single chunk
        client.stub.UploadFile(iter([gateway_pb2.UploadFileRequest(header=header)]), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert snapshot(store, settings.bucket) == before


@pytest.mark.parametrize("declared", [0, 1024], ids=["undeclared", "understated"])
def test_stream_longer_than_the_limit_is_cut_off_whatever_the_header_says(small_gateway, store, declared):
    client, settings = small_gateway
    before = snapshot(store, settings.bucket)
    header = gateway_pb2.UploadFileHeader(file_name="liar.bin", size=declared)
    chunks = [gateway_pb2.UploadFileRequest(chunk=os.urandom(256 * 1024)) for _ in range(8)]  # 2 MiB
    with pytest.raises(grpc.RpcError) as err:
        client.stub.UploadFile(iter([gateway_pb2.UploadFileRequest(header=header), *chunks]), timeout=20)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
    assert snapshot(store, settings.bucket) == before, "a refused upload left an object (or a staged part) behind"


def test_presigned_put_over_the_limit_is_refused_by_the_verify_job(small_gateway, store):
    """The presigned URL itself cannot bound the size; the verify job must, and must drop the object."""
    client, settings = small_gateway
    created = client.stub.CreateUpload(gateway_pb2.CreateUploadRequest(file_name="big.bin"), timeout=10)
    body = os.urandom(1024 * 1024 + 1)
    put = urllib.request.Request(created.upload_url, data=body, method="PUT")
    urllib.request.urlopen(put, timeout=30).close()
    job = client.stub.CompleteUpload(gateway_pb2.CompleteUploadRequest(upload_id=created.upload.id), timeout=10).job
    ended = list(client.watch_job(job.id))[-1]
    assert ended.state == common_pb2.JOB_STATE_FAILED and "limit" in ended.job.error
    assert client.get_upload(created.upload.id).state == gateway_pb2.UPLOAD_STATE_FAILED
    assert not store.exists(settings.bucket, created.upload.object.key)


# -- 6: presigned URLs the gateway hands out expire ----------------------------------------------


def test_upload_url_is_bound_to_its_key_and_tells_its_expiry(small_gateway, store):
    client, settings = small_gateway
    victim_key = "uploads/victim/data"  # another object in the bucket: what a forged URL would overwrite
    victim_bytes = b"somebody else's upload"
    store.put_bytes(settings.bucket, victim_key, victim_bytes)
    created = client.stub.CreateUpload(gateway_pb2.CreateUploadRequest(file_name="a.bin"), timeout=10)
    url = urllib.parse.urlsplit(created.upload_url)
    expires = int(urllib.parse.parse_qs(url.query)["X-Amz-Expires"][0])
    assert expires == int(gateway_uploads.PRESIGN_EXPIRY.total_seconds()) <= 3600
    assert abs(created.expire_time.seconds - (time.time() + expires)) < 30, "expire_time must say when the URL dies"
    # the signature covers the key: the same URL pointed at another object is refused
    forged = url._replace(path=f"/{settings.bucket}/{victim_key}").geturl()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(forged, data=b"{}", method="PUT"), timeout=10)
    assert err.value.code == 403
    assert store.get_bytes(settings.bucket, victim_key) == victim_bytes


def test_expired_upload_url_is_refused_end_to_end(small_gateway, store, monkeypatch):
    client, settings = small_gateway
    monkeypatch.setattr(gateway_uploads, "PRESIGN_EXPIRY", timedelta(seconds=1))  # the gateway's own constant
    created = client.stub.CreateUpload(gateway_pb2.CreateUploadRequest(file_name="late.bin"), timeout=10)
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(created.upload_url).query)["X-Amz-Expires"] == ["1"]
    time.sleep(2.2)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(created.upload_url, data=b"late", method="PUT"), timeout=10)
    assert err.value.code == 403
    assert not store.exists(settings.bucket, created.upload.object.key)
    with pytest.raises(grpc.RpcError) as failed:
        client.stub.CompleteUpload(gateway_pb2.CompleteUploadRequest(upload_id=created.upload.id), timeout=10)
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# -- 7: no secret in any log line or any error a client gets ------------------------------------


def _leaks(text: str, secret_values: list[str]) -> list[str]:
    return [f"...{s[-6:]}" for s in secret_values if s and s in text]


def _record_text(record) -> str:
    parts = [record.getMessage(), repr({k: v for k, v in vars(record).items() if k not in ("msg", "args")})]
    if record.exc_info:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    return "\n".join(parts)


def test_secrets_stay_out_of_logs_and_errors_in_process(seaweed, bucket, caplog):
    """Raw log records (before the formatter's redaction) and every error a client sees, while calls fail
    for wrong tokens, a worker with a wrong S3 secret, a gateway with a wrong internal token, and a gateway
    whose S3 secret is wrong."""
    caplog.set_level("DEBUG")
    wrong_s3 = f"wrong-s3-{secrets.token_hex(16)}"
    wrong_client = f"wrong-client-{secrets.token_hex(16)}"
    wrong_internal = f"wrong-internal-{secrets.token_hex(16)}"
    secret_values = [AUTH_TOKEN, INTERNAL_TOKEN, seaweed.secret_key, wrong_s3, wrong_client, wrong_internal]
    seen: list[str] = []  # every message, detail and trailer a client got

    settings = base_settings(seaweed, bucket, auth_token=AUTH_TOKEN, internal_token=INTERNAL_TOKEN,
                             log_level="DEBUG")
    # the accuracy worker cannot sign its S3 requests: every dataset import fails inside it
    system = start_system(settings, {"accuracy": dataclasses.replace(settings, s3_secret_key=wrong_s3)})
    address = system.address("gateway")
    try:
        ch = grpc.insecure_channel(address)
        stub = gateway_pb2_grpc.GatewayServiceStub(ch)
        for metadata in ((), bearer_metadata(wrong_client), bearer_metadata(INTERNAL_TOKEN)):
            code, details, trailers = invoke(ch, GATEWAY, GATEWAY.methods_by_name["ListProjects"], metadata=metadata)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            seen.append(details + repr(trailers))
        job = import_two_images(stub, bearer_metadata(AUTH_TOKEN))
        assert job.state == common_pb2.JOB_STATE_FAILED and job.failed_service == "accuracy"
        seen.append(str(job))
        events = list(stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.id), timeout=10,
                                    metadata=bearer_metadata(AUTH_TOKEN)))
        seen.append(str(events))
        # straight to the worker with its credential: its S3 failure comes back as a status
        from workbench.v1 import accuracy_pb2, accuracy_pb2_grpc

        worker = grpc.insecure_channel(system.address("accuracy"))
        request = accuracy_pb2.RenderDatasetPreviewRequest()
        request.dataset.bucket, request.dataset.prefix = bucket, "datasets/x/"
        with pytest.raises(grpc.RpcError) as err:
            accuracy_pb2_grpc.AccuracyServiceStub(worker).RenderDatasetPreview(
                request, timeout=20, metadata=bearer_metadata(INTERNAL_TOKEN))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()  # credentials rejected
        seen.append(err.value.details() + repr(err.value.trailing_metadata()))
        worker.close()
        ch.close()
    finally:
        system.stop()

    # a gateway presenting the wrong internal token: the worker refuses, the job says so without the token
    lost = start_system(settings, gateway_overrides={"internal_token": wrong_internal})
    try:
        ch = grpc.insecure_channel(lost.address("gateway"))
        job = import_two_images(gateway_pb2_grpc.GatewayServiceStub(ch), bearer_metadata(AUTH_TOKEN))
        assert job.state == common_pb2.JOB_STATE_FAILED and "accuracy" in job.error
        seen.append(str(job))
        ch.close()
    finally:
        lost.stop()

    # a gateway whose S3 secret is wrong cannot even start; why it cannot must not show the secret either
    with pytest.raises(Exception) as err:
        ServiceServer("gateway", dataclasses.replace(settings, s3_secret_key=wrong_s3),
                      gateway_registrar(dataclasses.replace(settings, s3_secret_key=wrong_s3)))
    seen.append("".join(traceback.format_exception(err.value)))
    assert "rejected the credentials" in str(err.value)

    # the objects most likely to end up in a log line or a traceback do not show a secret either
    store = ObjectStore.from_settings(settings)
    seen.extend(repr(thing) for thing in (settings, dataclasses.replace(settings, s3_secret_key=wrong_s3), store, seaweed))
    store.close()

    # the failures above were logged, so the check below has something to look at
    assert any("rejected the credentials" in r.getMessage() for r in caplog.records)
    leaked = {i: _leaks(text, secret_values) for i, text in enumerate(seen) if _leaks(text, secret_values)}
    assert not leaked, f"secrets in errors returned to the client: {leaked}"
    leaked_logs = [(r.name, r.getMessage()[:200]) for r in caplog.records if _leaks(_record_text(r), secret_values)]
    assert not leaked_logs, f"secrets in log records: {leaked_logs}"


class ServiceProcess:
    """`python -m services.<name>` with WORKBENCH_* settings; collects stderr, reads the bound port."""

    def __init__(self, name: str, settings: Settings):
        env = {**os.environ, **{f"WORKBENCH_{k.upper()}": str(v) for k, v in dataclasses.asdict(settings).items()}}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        self.lines: list[str] = []
        self.port: int | None = None
        self._ready = threading.Event()
        self.process = subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=REPO, env=env,
                                        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(60) or self.port is None:
            self.stop()
            raise RuntimeError(f"{name} did not start:\n" + "".join(self.lines[-20:]))

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if self.port is None:
                try:
                    self.port = json.loads(line).get("port")
                except ValueError:
                    pass
                if self.port is not None:
                    self._ready.set()
        self._ready.set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        return "".join(self.lines)


def test_secrets_stay_out_of_real_process_stderr(seaweed, bucket):
    """Real gateway and accuracy processes logging at DEBUG: the worker's S3 secret is wrong, so imports
    fail inside it; neither process's stderr nor any error the client gets carries a secret (the gateway
    does not know the worker's secret, so its log formatter could not hide that one)."""
    wrong_s3 = f"wrong-s3-{secrets.token_hex(16)}"
    wrong_client = f"wrong-client-{secrets.token_hex(16)}"
    secret_values = [AUTH_TOKEN, INTERNAL_TOKEN, seaweed.secret_key, wrong_s3, wrong_client]
    settings = base_settings(seaweed, bucket, auth_token=AUTH_TOKEN, internal_token=INTERNAL_TOKEN,
                             log_level="DEBUG", log_format="json")
    accuracy = ServiceProcess("accuracy", dataclasses.replace(settings, s3_secret_key=wrong_s3))
    gateway = None
    try:
        gateway = ServiceProcess("gateway", dataclasses.replace(settings, accuracy_addr=accuracy.address))
        seen = []
        with grpc.insecure_channel(gateway.address) as ch:
            for metadata in ((), bearer_metadata(wrong_client)):
                code, details, trailers = invoke(ch, GATEWAY, GATEWAY.methods_by_name["GetProject"], metadata=metadata)
                assert code == grpc.StatusCode.UNAUTHENTICATED
                seen.append(details + repr(trailers))
            job = import_two_images(gateway_pb2_grpc.GatewayServiceStub(ch), bearer_metadata(AUTH_TOKEN))
            assert job.state == common_pb2.JOB_STATE_FAILED and job.failed_service == "accuracy", job
            seen.append(str(job))
    finally:
        outputs = {"accuracy": accuracy.stop(), "gateway": gateway.stop() if gateway else ""}
    assert all(outputs.values())
    assert "rejected the credentials" in outputs["gateway"] + outputs["accuracy"], "the failure was not logged"
    for text in seen:
        assert not _leaks(text, secret_values), text
    for name, output in outputs.items():
        assert not _leaks(output, secret_values), f"{name} stderr: {_leaks(output, secret_values)}"
