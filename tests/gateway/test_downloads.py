"""ReadObject: what the gateway hands out (pictures, charts, previews, packages) streamed through it, over
real gRPC on an ephemeral port and a real SeaweedFS; and WorkbenchClient.with_token."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import urllib.request

import grpc
import pytest

from services.common.pb import ref_to_pb
from services.gateway.downloads import CHUNK_BYTES
from services.gateway.jobs import now
from services.common.server import ServiceServer
from services.gateway.servicer import Gateway, registrar
from tests.conftest import FRAMES
from workbench.client import WorkbenchClient, WorkbenchError
from workbench.v1 import common_pb2, gateway_pb2

PNG = b"\x89PNG\r\n\x1a\n" + b"not really a picture, but bytes all the same" * 20


@pytest.fixture
def replica(gateway_settings, store):
    """Another gateway's domain on the same catalog and bucket (not serving): records the way jobs write them."""
    other = Gateway(gateway_settings, store)
    yield other
    other.stop()


def put(store, bucket: str, key: str, data: bytes) -> common_pb2.ObjectRef:
    return ref_to_pb(store.put_bytes(bucket, key, data))


@pytest.fixture
def no_presigned_urls(monkeypatch):
    """The SDK must not fetch download_url: a client outside the cluster cannot reach the store it names."""
    def refuse(*args, **kwargs):
        raise AssertionError("the SDK fetched a presigned URL instead of reading through the gateway")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# -- what may be read --------------------------------------------------------------------------


def test_handed_out_objects_stream_through_the_gateway(gateway, store, bucket, no_presigned_urls):
    package = os.urandom(2 * CHUNK_BYTES + 12345)  # three chunks
    refs = [
        put(store, bucket, "datasets/dst-1/renders/7-1234.png", PNG),  # report picture
        put(store, bucket, "datasets/dst-1/previews/preview-4.png", PNG[::-1]),  # dataset preview
        put(store, bucket, f"sweeps/{os.urandom(8).hex()}/chart.png", PNG * 2),  # sweep chart
        put(store, bucket, "packages/pkg-1/tiny-model.tar.gz", package),  # deployment package
        put(store, bucket, "packages/pkg-2/empty.tar.gz", b""),
    ]
    for ref in refs:
        data = gateway.read_object(ref)
        assert len(data) == ref.size and hashlib.sha256(data).hexdigest() == ref.sha256, ref.key

    messages = list(gateway.stub.ReadObject(gateway_pb2.ReadObjectRequest(object=refs[3])))
    assert [m.size for m in messages] == [len(package), 0, 0]  # the size comes first, once
    assert all(0 < len(m.chunk) <= CHUNK_BYTES for m in messages)
    assert b"".join(m.chunk for m in messages) == package
    empty = list(gateway.stub.ReadObject(gateway_pb2.ReadObjectRequest(object=refs[4])))
    assert [(m.chunk, m.size) for m in empty] == [(b"", 0)]


def test_sdk_reads_charts_and_packages_through_the_gateway(gateway, replica, store, bucket, tmp_path,
                                                           no_presigned_urls):
    chart = put(store, bucket, f"sweeps/{os.urandom(8).hex()}/chart.png", PNG)
    project = gateway.create_project("swept")
    replica.catalog.projects.update(project.id, "project_id", lambda p: p.last_sweep.chart.CopyFrom(chart))
    package_id = replica.packages.records.new_id()
    archive = put(store, bucket, f"packages/{package_id}/swept.tar.gz", os.urandom(CHUNK_BYTES + 1))
    replica.packages.records.insert(gateway_pb2.DeploymentPackage(
        id=package_id, project_id=project.id, archive=archive, create_time=now()))

    assert gateway.sweep_chart(project.id) == PNG
    (tmp_path / "out").mkdir()
    path = gateway.download_package(package_id, tmp_path / "out" / "swept.tar.gz")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == archive.sha256
    assert [p.name for p in path.parent.iterdir()] == ["swept.tar.gz"]  # no partial file left beside it
    # the presigned URL is still handed out, for clients that can reach the store
    assert gateway.stub.GetPackage(gateway_pb2.GetPackageRequest(package_id=package_id)).download_url


def test_preview_of_an_imported_dataset_comes_through_the_gateway(workbench, no_presigned_urls):
    client = workbench.client
    dataset_id = client.wait_job(client.import_dataset("four frames", FRAMES[:4]).id).output.dataset_id
    png = client.preview_dataset(dataset_id, max_images=4)
    assert png.startswith(b"\x89PNG")
    ref = client.stub.PreviewDataset(gateway_pb2.PreviewDatasetRequest(dataset_id=dataset_id, max_images=4)).png
    assert ref.key.startswith(f"datasets/{dataset_id}/previews/")
    assert hashlib.sha256(png).hexdigest() == ref.sha256


# -- what may not --------------------------------------------------------------------------------


def test_refused_reads_name_the_reason_and_leave_the_gateway_healthy(gateway, store, seaweed_store, bucket,
                                                                     tmp_path):
    other_bucket = f"{bucket}-other"
    seaweed_store.ensure_bucket(other_bucket)
    try:
        elsewhere = put(seaweed_store, other_bucket, "packages/pkg-1/a.tar.gz", b"someone else's")
        upload_file = tmp_path / "yolo.weights"
        upload_file.write_bytes(os.urandom(1000))
        upload = gateway.upload_file(upload_file)
        image = put(store, bucket, "datasets/dst-1/images/frame.jpg", b"a dataset's image")
        weights = put(store, bucket, "models/ir/abc/model.bin", b"weights")
        replaced = put(store, bucket, "packages/pkg-3/model.tar.gz", b"the old package")
        put(store, bucket, "packages/pkg-3/model.tar.gz", b"the package now")
        ref = common_pb2.ObjectRef
        cases = [
            (elsewhere, grpc.StatusCode.PERMISSION_DENIED, "not the gateway's bucket"),
            (ref(key="packages/pkg-1/a.tar.gz"), grpc.StatusCode.INVALID_ARGUMENT, "object.bucket is required"),
            (upload.object, grpc.StatusCode.PERMISSION_DENIED, "not an object the gateway hands out"),
            (image, grpc.StatusCode.PERMISSION_DENIED, "not an object the gateway hands out"),
            (weights, grpc.StatusCode.PERMISSION_DENIED, "not an object the gateway hands out"),
            (ref(bucket=bucket, key="_tmp/0123abcd"), grpc.StatusCode.INVALID_ARGUMENT, "reserved"),
            (ref(bucket=bucket, key=f"packages/../{upload.object.key}"), grpc.StatusCode.INVALID_ARGUMENT, "'..'"),
            (ref(bucket=bucket, key=""), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
            (ref(bucket=bucket, key="packages/pkg-9/missing.tar.gz"), grpc.StatusCode.NOT_FOUND, "not found"),
            (replaced, grpc.StatusCode.FAILED_PRECONDITION, "it was replaced"),
        ]
        for wanted, code, says in cases:
            with pytest.raises(WorkbenchError) as err:
                gateway.read_object(wanted)
            assert (err.value.code, says in err.value.message) == (code, True), (wanted, err.value)
    finally:
        seaweed_store.delete_bucket(other_bucket)

    assert gateway.health() == "SERVING"
    chart = put(store, bucket, "sweeps/0123456789abcdef/chart.png", PNG)
    assert gateway.read_object(chart) == PNG


# -- tokens ---------------------------------------------------------------------------------------


def test_with_token_shares_the_channel_and_sends_the_token(gateway_settings, store, bucket):
    settings = dataclasses.replace(gateway_settings, auth_token="s3cret-token")
    server = ServiceServer("gateway", settings, registrar(settings))
    server.start()
    owner = WorkbenchClient(server.address, token="", timeout=20)  # one channel, no token of its own
    try:
        chart = put(store, bucket, "sweeps/0123456789abcdef/chart.png", PNG)
        user = owner.with_token("s3cret-token")
        assert user.stub is owner.stub and user.create_project("console").name == "console"
        assert user.read_object(chart) == PNG  # the stream is authenticated like every other RPC
        for anonymous in (owner, user.with_token(""), owner.with_token("wrong")):
            with pytest.raises(WorkbenchError) as err:
                anonymous.read_object(chart)
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(WorkbenchError) as err:
                list(anonymous.list_projects())
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        user.close()  # not the owner: the shared channel stays open
        assert [p.name for p in owner.with_token("s3cret-token").list_projects()] == ["console"]
    finally:
        owner.close()
        server.shutdown(grace=1)
