"""Model import through the gateway and the converter service: real gRPC, real SeaweedFS."""

from __future__ import annotations

import dataclasses
import re

import grpc
import numpy as np
import onnx
import openvino as ov
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import running_workbench
from tests.small_models import small_classifier
from workbench.cli.models import model_info
from workbench.client import JobFailedError
from workbench_runtime.model_info import write_model_info
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


# An import refuses a model it could never run: an input or a constant with more elements than
# Settings.max_tensor_elements (2**31 by default), after the user's input shapes are applied.

def relu_model(path, shape, constant_shape=None):
    """x -> Relu (+ a constant initializer of constant_shape): an ONNX model whose only size is its shapes."""
    nodes, inits = [helper.make_node("Relu", ["x"], ["y"])], []
    if constant_shape:
        inits.append(numpy_helper.from_array(np.ones(constant_shape, np.float32), "big"))
        nodes.append(helper.make_node("Add", ["y", "big"], ["z"]))
    graph = helper.make_graph(nodes, "relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT,
                                                             list(constant_shape or shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def dynamic_classifier(path, dims):
    """tests.small_models' classifier with its input dimensions replaced by dims (a str: a dynamic one)."""
    model = small_classifier(path)
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, dims):
        if isinstance(value, str):
            dim.dim_param = value  # a oneof: clears dim_value
        else:
            dim.dim_value = value
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def classifier(path):
    small_classifier(path)
    return path


def kept_keys(store, bucket: str) -> set[str]:
    """Everything in the bucket but the uploads themselves (each import stores its files before converting)."""
    return {r.key for r in store.list(bucket) if not r.key.startswith("uploads/")}


def failed_import(client, name, files, **kwargs) -> JobFailedError:
    job = client.import_model(name, files, **kwargs)
    with pytest.raises(JobFailedError) as err:
        client.wait_job(job.id)
    assert err.value.job.failed_service == "converter"
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, err.value.job.error
    return err.value


@pytest.mark.parametrize(
    ("shape", "found"),
    [
        ([10**6, 10**6, 1000, 1000], "[1000000,1000000,1000,1000]: 1,000,000,000,000,000,000 elements"),
        # a dynamic batch counts as 1, the batch the analysis takes
        (["N", 10**6, 10**6, 1000], "[?,1000000,1000000,1000], taken as [1,1000000,1000000,1000] "
                                    "(batch 1 by default): 1,000,000,000,000,000 elements"),
    ],
)
def test_an_absurd_input_is_refused_until_the_import_gives_it_a_shape(stack, tmp_path, store, shape, found):
    client, settings, _ = stack
    path = relu_model(tmp_path / "absurd.onnx", shape)
    before = kept_keys(store, settings.bucket)
    error = failed_import(client, "absurd", {ROLE.MODEL_FILE_ROLE_MODEL: path})
    assert error.job.error == (
        f"converter: input x has the shape {found}, more than the limit of 2,147,483,648 (the converter's "
        "WORKBENCH_MAX_TENSOR_ELEMENTS); import it with an input shape that fits: --input-shape x=SHAPE in "
        "`workbench model import`, ConvertOptions.input_shapes in the API")
    assert kept_keys(store, settings.bucket) == before  # no IR, nothing half-written
    assert client.health() == "SERVING"
    # the override the message names: the same model with the import's input shape
    done = client.wait_job(client.import_model("fits", {ROLE.MODEL_FILE_ROLE_MODEL: path},
                                               options=common_pb2.ConvertOptions(input_shapes={"x": "[1,3,8,8]"})).id)
    tensor = client.get_model(done.output.model_id).artifact.analysis.inputs[0]
    assert (tensor.shape, tensor.analyzed_shape, tensor.shape_source) == (
        "[1,3,8,8]", "[1,3,8,8]", "the import's input shape")
    assert kept_keys(store, settings.bucket) > before


def test_an_absurd_constant_is_refused_at_the_converters_limit(s3_settings, tmp_path, store):
    # the limit is the converter's setting: 10,000 elements here (2**31 by default needs an 8 GB constant)
    with running_workbench(s3_settings, {"converter": dataclasses.replace(s3_settings, max_tensor_elements=10_000)}) \
            as workbench:
        client = workbench.client
        path = relu_model(tmp_path / "constant.onnx", [1, 1], constant_shape=(200, 100))
        before = kept_keys(store, s3_settings.bucket)
        error = failed_import(client, "constant", {ROLE.MODEL_FILE_ROLE_MODEL: path})
        assert re.fullmatch(
            r"converter: constant \S+ has the shape \[200,100\]: 20,000 elements, more than the limit of 10,000 "
            r"\(the converter's WORKBENCH_MAX_TENSOR_ELEMENTS\); only a converter with a larger "
            r"WORKBENCH_MAX_TENSOR_ELEMENTS imports it", error.job.error), error.job.error
        assert kept_keys(store, s3_settings.bucket) == before
        assert client.health() == "SERVING"
        # under the limit: a constant of 10,000 and the classifier (an input of 3,072, weights of 216) import
        at_limit = relu_model(tmp_path / "limit.onnx", [1, 1], constant_shape=(100, 100))
        for name, model in (("at the limit", at_limit), ("classifier", classifier(tmp_path / "c.onnx"))):
            client.wait_job(client.import_model(name, {ROLE.MODEL_FILE_ROLE_MODEL: model}).id)
        # an input over it names the input
        wide = relu_model(tmp_path / "wide.onnx", [1, 10_001])
        error = failed_import(client, "input", {ROLE.MODEL_FILE_ROLE_MODEL: wide})
        assert error.job.error.startswith("converter: input x has the shape [1,10001]: 10,001 elements, more than "
                                          "the limit of 10,000"), error.job.error


def test_a_dynamic_input_reports_the_shape_it_took(stack, tmp_path, capsys):
    client, settings, _ = stack
    path = classifier(tmp_path / "static.onnx")
    static = client.wait_job(client.import_model("static", {ROLE.MODEL_FILE_ROLE_MODEL: path}).id)
    static = client.get_model(static.output.model_id).artifact.analysis
    assert (static.inputs[0].analyzed_shape, static.inputs[0].shape_source) == ("[1,3,32,32]", "the model")

    # a dynamic batch takes 1: GFLOPs and task as at [1,3,32,32], not 0 and "unknown"
    path = dynamic_classifier(tmp_path / "batch.onnx", ["N", 3, 32, 32])
    done = client.wait_job(client.import_model("batch", {ROLE.MODEL_FILE_ROLE_MODEL: path}).id)
    model = client.get_model(done.output.model_id)
    tensor, analysis = model.artifact.analysis.inputs[0], model.artifact.analysis
    assert (tensor.shape, tensor.analyzed_shape, tensor.shape_source) == (
        "[?,3,32,32]", "[1,3,32,32]", "the model [?,3,32,32]: batch 1 by default")
    assert analysis.gflops == pytest.approx(static.gflops) and analysis.gflops > 0
    assert analysis.task == "classification"
    model_info(model)  # what `workbench model info` prints
    assert "input image analyzed at [1,3,32,32]: the model [?,3,32,32]: batch 1 by default" in capsys.readouterr().out

    # dynamic height and width: the user's shape, else model_info's input size, else no default
    path = dynamic_classifier(tmp_path / "size.onnx", ["N", 3, "H", "W"])
    shaped = client.wait_job(client.import_model("shaped", {ROLE.MODEL_FILE_ROLE_MODEL: path}, options=(
        common_pb2.ConvertOptions(input_shapes={"image": "[?,3,64,64]"}))).id)
    tensor = client.get_model(shaped.output.model_id).artifact.analysis.inputs[0]
    assert (tensor.shape, tensor.analyzed_shape, tensor.shape_source) == (
        "[?,3,64,64]", "[1,3,64,64]", "the import's input shape [?,3,64,64]: batch 1 by default")
    bare = client.wait_job(client.import_model("bare", {ROLE.MODEL_FILE_ROLE_MODEL: path}).id)
    tensor = client.get_model(bare.output.model_id).artifact.analysis.inputs[0]
    assert (tensor.analyzed_shape, tensor.shape_source) == ("[1,3,?,?]", (
        "the model [?,3,?,?]: batch 1 by default, height dynamic: no default applies, width dynamic: no default "
        "applies"))
    ir = ov.Core().read_model(str(path))
    write_model_info(ir, {"input_height": "48", "input_width": "40"})
    xml = tmp_path / "ir" / "model.xml"
    ov.save_model(ir, str(xml))
    from_ir = client.wait_job(client.import_model("ir", {ROLE.MODEL_FILE_ROLE_IR_XML: xml,
                                                         ROLE.MODEL_FILE_ROLE_IR_BIN: xml.with_suffix(".bin")}).id)
    analysis = client.get_model(from_ir.output.model_id).artifact.analysis
    assert (analysis.inputs[0].analyzed_shape, analysis.inputs[0].shape_source) == ("[1,3,48,40]", (
        "the model [?,3,?,?]: batch 1 by default, height 48 from model_info input_height, width 40 from model_info "
        "input_width"))
    assert analysis.gflops == pytest.approx((2 * 8 * 48 * 40 * 27 + 2 * 10 * 8) / 1e9, rel=1e-6)
