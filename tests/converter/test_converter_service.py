"""Model import through the gateway and the converter service: real gRPC, real SeaweedFS."""

from __future__ import annotations

import re

import grpc
import pytest

from tests.small_models import small_classifier
from workbench.client import JobFailedError
from workbench.v1 import common_pb2, converter_pb2, converter_pb2_grpc

ROLE = common_pb2


@pytest.fixture
def stack(workbench):
    """The client, the settings and the converter server of the in-process services."""
    return workbench.client, workbench.settings, workbench.servers["converter"]


def stored_keys(store, bucket: str) -> set[str]:
    return {r.key for r in store.list(bucket, "models/")}


def test_onnx_import_stores_a_content_addressed_ir_with_its_analysis(stack, tmp_path, store):
    client, settings, _ = stack
    small_classifier(tmp_path / "classifier.onnx")
    events = []
    job = client.import_model("classifier", {ROLE.MODEL_FILE_ROLE_MODEL: tmp_path / "classifier.onnx"})
    done = client.wait_job(job.id, on_event=events.append)
    stages = [e.progress.stage for e in events if e.progress.stage]
    assert stages[:1] == ["download"] and "convert" in stages and "upload" in stages
    model = client.get_model(done.output.model_id)
    assert model.framework == common_pb2.FRAMEWORK_ONNX
    assert model.artifact.analysis.task == "classification"
    assert model.artifact.analysis.parameter_count == 314
    assert model.artifact.xml.key.startswith("models/ir/") and model.artifact.xml.sha256
    assert store.stat(settings.bucket, model.artifact.bin.key).sha256 == model.artifact.bin.sha256
    # The same content imported again is stored once.
    again = client.wait_job(client.import_model("again", {ROLE.MODEL_FILE_ROLE_MODEL: tmp_path / "classifier.onnx"}).id)
    assert client.get_model(again.output.model_id).artifact.xml.key == model.artifact.xml.key
    assert [m.name for m in client.list_models()] == ["again", "classifier"]  # newest first
    assert [m.name for m in client.list_models(oldest_first=True)] == ["classifier", "again"]


def test_analyze_model_reads_a_stored_ir(stack, tmp_path):
    client, settings, converter = stack
    small_classifier(tmp_path / "classifier.onnx")
    done = client.wait_job(client.import_model("c", {ROLE.MODEL_FILE_ROLE_MODEL: tmp_path / "classifier.onnx"}).id)
    artifact = client.get_model(done.output.model_id).artifact
    with grpc.insecure_channel(converter.address) as channel:
        stub = converter_pb2_grpc.ConverterServiceStub(channel)
        metadata = (("authorization", "Bearer internal"),)
        response = stub.AnalyzeModel(converter_pb2.AnalyzeModelRequest(xml=artifact.xml, bin=artifact.bin),
                                     metadata=metadata)
        assert response.analysis == artifact.analysis
        with pytest.raises(grpc.RpcError) as err:  # workers refuse callers without the internal credential
            stub.AnalyzeModel(converter_pb2.AnalyzeModelRequest(xml=artifact.xml, bin=artifact.bin))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("files", "framework", "message"),
    [
        # messages name the file the user uploaded, not the converter's local copy (model.onnx, model.pt...)
        ({"junk.onnx": b"\x01\x02garbage" * 100}, 0,
         r"^converter: junk\.onnx( is not a model of any supported framework|: \w+ model could not be converted)"),
        ({"weights.pt": b"\x80\x04K\x01."}, 0, r"weights\.pt is a PyTorch pickle, which runs code when loaded"),
        ({"mine.tflite": None}, common_pb2.FRAMEWORK_TFLITE, r"mine\.tflite is a \w+ model, not \w+ as declared"),
    ],
)
def test_bad_model_files_fail_the_job_naming_the_problem(stack, tmp_path, store, files, framework, message):
    client, settings, _ = stack
    paths = {}
    for name, content in files.items():
        path = tmp_path / name
        if content is None:
            small_classifier(path)
        else:
            path.write_bytes(content)
        paths[ROLE.MODEL_FILE_ROLE_MODEL] = path
    before = stored_keys(store, settings.bucket)
    job = client.import_model("bad", paths, framework=framework)
    with pytest.raises(JobFailedError) as err:
        client.wait_job(job.id)
    assert err.value.job.failed_service == "converter"
    assert re.search(message, err.value.job.error), err.value.job.error
    # the job says how it failed as a status code, and the SDK raises with it
    assert err.value.job.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert stored_keys(store, settings.bucket) == before  # nothing half-written
    assert client.health() == "SERVING"


def test_converter_down_fails_the_job_naming_it(stack, tmp_path):
    client, settings, converter = stack
    converter.shutdown(grace=0)
    small_classifier(tmp_path / "classifier.onnx")
    job = client.import_model("c", {ROLE.MODEL_FILE_ROLE_MODEL: tmp_path / "classifier.onnx"})
    with pytest.raises(JobFailedError) as err:
        client.wait_job(job.id)
    assert err.value.job.failed_service == "converter" and "unavailable" in err.value.job.error
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
