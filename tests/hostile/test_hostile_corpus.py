"""The hostile-input corpus (tests/hostile/corpus.py) through the public API, one test per file.

One stack for the whole module: the four workers and a gateway in-process on free ports over the
session's SeaweedFS, in a bucket of their own, reached only through WorkbenchClient. For each file:
the outcome the corpus expects (the RPC's status, or the job's end and its message, or the dataset's
warnings), no code ran (the pickles' marker file is absent), nothing was written outside storage
(the folder the attacks aim at is still empty), a failed import left nothing in storage, no job hung,
and every service still answers SERVING on grpc.health.v1.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.server import ServiceServer
from services.common.settings import Settings
from tests.conftest import start_services, stop_services
from tests.hostile.corpus import (
    CORPUS, DATASET, FAILED, IMAGES, IMPORTED, MARKER_NAME, MODEL, MODEL_FILE, REFUSED, UPLOAD, Hostile, Payload,
    pickle_bytes, tiny_onnx_bytes, write_npy_payload,
)
from workbench.client import TERMINAL_STATES, WorkbenchClient, WorkbenchError
from workbench.v1 import common_pb2, gateway_pb2

JOB_DEADLINE_S = 90.0  # far above what any entry takes; a job still running then has hung


@dataclasses.dataclass
class Stack:
    client: WorkbenchClient
    settings: Settings
    servers: dict[str, ServiceServer]
    store: object
    bucket: str


@pytest.fixture(scope="module")
def stack(seaweed, seaweed_store):
    """As tests/conftest.py's `workbench` fixture, but shared by the module, in a bucket of its own."""
    bucket = f"hostile-{uuid.uuid4().hex[:12]}"
    seaweed_store.ensure_bucket(bucket)
    settings = Settings.from_env({}, s3_endpoint=seaweed.endpoint, s3_access_key=seaweed.access_key,
                                 s3_secret_key=seaweed.secret_key, bucket=bucket, listen="127.0.0.1:0",
                                 grace_seconds=1.0, internal_token=secrets.token_hex(8))
    servers: dict[str, ServiceServer] = {}
    client = None
    try:
        settings, servers = start_services(settings)
        client = WorkbenchClient(servers["gateway"].address, timeout=60)
        yield Stack(client, settings, servers, seaweed_store, bucket)
    finally:
        if client is not None:
            client.close()
        stop_services(servers)
        seaweed_store.delete_bucket(bucket)


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile-corpus")


@pytest.fixture(scope="module")
def outside():
    """The folder every attack aims at: it exists (so a write there would succeed) and must stay empty."""
    folder = Path(tempfile.gettempdir()) / f"hostile-outside-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# ---- checks ----------------------------------------------------------------------------------------


def assert_serving(stack: Stack) -> None:
    """Every service answers grpc.health.v1 Check with SERVING, overall and for each service it registered."""
    for name, server in stack.servers.items():
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ["", *server.service_names]:
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
                assert status == health_pb2.HealthCheckResponse.SERVING, (name, service, status)


def assert_outside_untouched(outside: Path) -> None:
    assert not (outside / MARKER_NAME).exists(), "a pickle payload ran: its marker file exists"
    assert sorted(p.name for p in outside.iterdir()) == [], "something was written outside storage"


def assert_storage_clean(stack: Stack) -> None:
    """Everything under models/ and datasets/ is the IR or files of a model or dataset that the catalog lists."""
    models = list(stack.client.list_models())
    kept = {ref.key for m in models for ref in (m.artifact.xml, m.artifact.bin)}
    datasets = list(stack.client.list_datasets())
    stray_models = [o.key for o in stack.store.list(stack.bucket, "models/") if o.key not in kept]
    stray_datasets = [o.key for o in stack.store.list(stack.bucket, "datasets/")
                      if not any(o.key.startswith(d.artifact.prefix) for d in datasets)]
    assert stray_models == [] and stray_datasets == [], f"objects left behind: {stray_models + stray_datasets}"


def wait_terminal(client: WorkbenchClient, job_id: str) -> common_pb2.Job:
    deadline = time.monotonic() + JOB_DEADLINE_S
    while True:
        job = client.get_job(job_id)
        if job.state in TERMINAL_STATES:
            return job
        assert time.monotonic() < deadline, f"job {job_id} hung: still {common_pb2.JobState.Name(job.state)}"
        time.sleep(0.05)


def raw_upload(client: WorkbenchClient, path: Path, file_name: str, declared_size: int | None):
    """UploadFile with a header the corpus chose, not the one the client would send."""
    header = gateway_pb2.UploadFileHeader(file_name=file_name, request_id=uuid.uuid4().hex,
                                          size=path.stat().st_size if declared_size is None else declared_size)

    def messages():
        yield gateway_pb2.UploadFileRequest(header=header)
        yield gateway_pb2.UploadFileRequest(chunk=path.read_bytes())

    try:
        return client.stub.UploadFile(messages(), timeout=30)
    except grpc.RpcError as error:
        raise WorkbenchError.from_rpc_error(error) from None


def submit(stack: Stack, hostile: Hostile, files: list):
    """Start the import the entry goes to: the job, or the upload's response for UPLOAD entries."""
    client, name = stack.client, f"hostile {hostile.name}"
    if hostile.target == MODEL:
        roles = dict(files)
        assert len(roles) == len(files), "one file per role"
        return client.import_model(name, roles, framework=hostile.framework)
    if hostile.target == DATASET:
        return client.import_dataset(name, files, format=hostile.dataset_format)
    assert hostile.target == UPLOAD and len(files) == 1
    return raw_upload(client, files[0], hostile.upload_name, hostile.declared_size)


def check_outcome(stack: Stack, hostile: Hostile, files: list) -> str:
    """Run the entry and check the outcome the corpus expects; returns a one-line description."""
    expect = hostile.expect
    try:
        started = submit(stack, hostile, files)
    except WorkbenchError as error:
        assert expect.outcome == REFUSED, f"refused with {error.code.name}: {error.message}"
        assert error.code == expect.code, f"{error.code.name}: {error.message}"
        assert re.search(expect.pattern, error.message), error.message
        return f"{error.code.name}: {error.message}"
    assert expect.outcome != REFUSED, f"accepted, but {expect.code.name} was expected"
    job = wait_terminal(stack.client, started.id)
    state = common_pb2.JobState.Name(job.state)
    if expect.outcome == FAILED:
        assert job.state == common_pb2.JOB_STATE_FAILED, f"{state}: {job.error or 'accepted silently'}"
        assert job.failed_service == expect.service, (job.failed_service, job.error)
        assert re.search(expect.pattern, job.error), job.error
        assert "internal error" not in job.error and "Traceback" not in job.error, job.error
        return f"FAILED in {job.failed_service}: {job.error}"
    assert expect.outcome == IMPORTED
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, f"{state}: {job.error}"
    summary = stack.client.get_dataset(job.output.dataset_id).artifact.summary
    warnings = list(summary.warnings)
    for pattern in (expect.pattern, *expect.warnings):
        assert any(re.search(pattern, w) for w in warnings), f"no warning matches {pattern!r}: {warnings}"
    assert summary.image_count == expect.images, (summary.image_count, warnings)
    return f"SUCCEEDED with {summary.image_count} images and warnings: {'; '.join(warnings)}"


# ---- the payloads are live: were anything to unpickle them, the marker would appear ---------------


def test_the_pickle_payloads_would_create_the_marker(tmp_path):
    import pickle

    import numpy as np

    for protocol in (0, 2, 4):
        marker = tmp_path / f"marker-{protocol}"
        pickle.loads(pickle_bytes(marker, protocol)).close()  # the point: proving the payload runs
        assert marker.exists()
    marker = tmp_path / "marker-npy"
    np.load(write_npy_payload(tmp_path / "evil.npy", marker), allow_pickle=True)[0].close()
    assert marker.exists()
    assert isinstance(Payload(marker).__reduce__()[0], type(open))


ESCAPES = ("model-archive-traversal", "zip-traversal", "zip-absolute-path", "tar-traversal", "tar-absolute-path",
           "tar-symlink-then-write-through-it", "zip-symlink-then-write-through-it")


def naive_extract(archive: Path, dest: Path) -> None:
    """What an unguarded extractor does: names joined to dest as they are, links created as they say."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = Path(os.path.join(dest, info.filename))
                target.parent.mkdir(parents=True, exist_ok=True)
                if stat.S_ISLNK(info.external_attr >> 16):
                    target.symlink_to(zf.read(info).decode())
                else:
                    target.write_bytes(zf.read(info))
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="fully_trusted")


@pytest.mark.parametrize("name", ESCAPES)
def test_the_archive_attacks_would_escape_an_unguarded_extractor(tmp_path, name):
    """So an empty `outside` after the real import means the service stopped them."""
    hostile = next(h for h in CORPUS if h.name == name)
    outside = tmp_path / "outside"
    outside.mkdir()
    [archive] = [f[1] if isinstance(f, tuple) else f for f in hostile.files(tmp_path / "built", outside)]
    naive_extract(archive, tmp_path / "deep" / "extract" / "files")
    assert [p.name for p in outside.iterdir()] in (["evil.txt"], ["evil.pb"])


# ---- the corpus --------------------------------------------------------------------------------------


def test_the_corpus_is_big_enough():
    assert len(CORPUS) >= 30
    assert {h.target for h in CORPUS} == {MODEL, DATASET, UPLOAD}
    assert {h.expect.outcome for h in CORPUS} == {REFUSED, FAILED, IMPORTED}


@pytest.mark.parametrize("hostile", CORPUS, ids=lambda h: h.name)
def test_hostile_file(stack, corpus_root, outside, hostile, record_property, caplog):
    files = hostile.files(corpus_root, outside)
    try:
        record_property("outcome", check_outcome(stack, hostile, files))
    finally:
        assert_outside_untouched(outside)
    assert_storage_clean(stack)
    assert_serving(stack)
    crashes = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
               and ("unhandled exception" in r.getMessage() or "crashed" in r.getMessage())]
    assert crashes == [], "a service crashed on the file"


# ---- afterwards: still serving, and good imports still work -----------------------------------------


def test_after_the_corpus_every_service_serves_and_good_imports_succeed(stack, outside, tmp_path):
    assert_serving(stack)
    assert stack.client.health() == "SERVING"
    job = stack.client.import_dataset("good images", [IMAGES / "dog.jpg", IMAGES / "eagle.jpg"])
    job = stack.client.wait_job(job.id)
    dataset = stack.client.get_dataset(job.output.dataset_id)
    assert dataset.artifact.summary.image_count == 2
    assert list(dataset.artifact.summary.warnings) == []
    model = tmp_path / "model.onnx"
    model.write_bytes(tiny_onnx_bytes())
    job = stack.client.wait_job(stack.client.import_model("good onnx", {MODEL_FILE: model}).id)
    analysis = stack.client.get_model(job.output.model_id).artifact.analysis
    assert [t.shape for t in analysis.inputs] == ["[1,3,16,16]"]
    assert_storage_clean(stack)
    assert_outside_untouched(outside)
    assert_serving(stack)
