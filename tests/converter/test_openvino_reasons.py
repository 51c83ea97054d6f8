"""Models OpenVINO refuses give the user OpenVINO's reason, not the C++ source location it opens with: the real
frontends through the gateway and the converter service, then `reason` on OpenVINO's literal messages."""

from __future__ import annotations

import re

import flatbuffers
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import TensorProto, helper

from services.common.openvino_errors import LIMIT, reason
from tests.small_models import small_classifier
from workbench.client import JobFailedError
from workbench.v1 import common_pb2

MODEL = common_pb2.MODEL_FILE_ROLE_MODEL
NOISE = ("Exception from", "failed at src/", "FrontEnd API failed", ".cpp:")


def tflite_with_custom_op(path, op: str = "Convolution2DTransposeBias") -> None:
    """A TFLite flatbuffer (schema.fbs, identifier TFL3) of one CUSTOM operator `op` from a [1,4] float tensor x to
    y, which no OpenVINO translator converts. Tables are built by their schema's field slots."""
    b = flatbuffers.Builder(512)

    def vector(items, prepend):
        b.StartVector(4, len(items), 4)
        for item in reversed(items):
            prepend(item)
        return b.EndVector()

    def ints(values):
        return vector(values, b.PrependInt32)

    def tables(offsets):
        return vector(offsets, b.PrependUOffsetTRelative)

    tensors = []
    for name in ("x", "y"):  # Tensor: shape 0, type 1 (FLOAT32 = 0), buffer 2, name 3
        name_at, shape = b.CreateString(name), ints([1, 4])
        b.StartObject(4)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependUOffsetTRelativeSlot(3, name_at, 0)
        tensors.append(b.EndObject())
    tensors_at, inputs, outputs, op_inputs, op_outputs = tables(tensors), ints([0]), ints([1]), ints([0]), ints([1])
    b.StartObject(3)  # Operator: opcode_index 0, inputs 1, outputs 2
    b.PrependUOffsetTRelativeSlot(1, op_inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, op_outputs, 0)
    operators = tables([b.EndObject()])
    b.StartObject(4)  # SubGraph: tensors 0, inputs 1, outputs 2, operators 3
    for slot, at in enumerate((tensors_at, inputs, outputs, operators)):
        b.PrependUOffsetTRelativeSlot(slot, at, 0)
    subgraphs = tables([b.EndObject()])
    custom = b.CreateString(op)
    b.StartObject(4)  # OperatorCode: deprecated_builtin_code 0, custom_code 1, version 2, builtin_code 3 (CUSTOM = 32)
    b.PrependInt8Slot(0, 32, 0)
    b.PrependUOffsetTRelativeSlot(1, custom, 0)
    b.PrependInt32Slot(2, 1, 0)
    b.PrependInt32Slot(3, 32, 0)
    codes = tables([b.EndObject()])
    b.StartObject(1)  # Buffer 0: empty, as the schema asks
    buffers = tables([b.EndObject()])
    b.StartObject(5)  # Model: version 0, operator_codes 1, subgraphs 2, description 3, buffers 4
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, codes, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))


def onnx_adding(path, weights: TensorProto) -> None:
    """y = x + w, w the given initializer of 4 floats."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "add",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weights])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


def onnx_with_escaping_external_data(path) -> None:
    weights = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    weights.ClearField("float_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../" * 16 + "etc/passwd"), ("offset", "0"), ("length", "16")):
        weights.external_data.add(key=key, value=value)
    onnx_adding(path, weights)


def onnx_with_short_raw_data(path) -> None:
    weights = helper.make_tensor("w", TensorProto.FLOAT, [4], b"\0" * 16, raw=True)
    weights.raw_data = b"\0" * 12  # 3 floats for a shape of 4
    onnx_adding(path, weights)


def garbage(path) -> None:
    path.write_bytes(b"\x01\x02garbage" * 100)


@pytest.mark.parametrize(
    ("name", "build", "message"),
    [
        ("deconv.tflite", tflite_with_custom_op,
         r"^converter: deconv\.tflite: TFLITE model could not be converted: "
         r"No translator found for Convolution2DTransposeBias node\.?$"),
        ("escape.onnx", onnx_with_escaping_external_data,
         r"^converter: escape\.onnx: ONNX model could not be converted: .*Path '(\.\./)+etc/passwd' resolves to "
         r"'/etc/passwd' which is outside the base directory \(the model's folder\)$"),  # not its temp path
        ("short.onnx", onnx_with_short_raw_data,
         r"^converter: short\.onnx: ONNX model could not be converted: The size of the initializer does not match "
         r"the number of elements implied by its shape for tensor 'w'"),
        ("junk.pdmodel", garbage, r"^converter: junk\.pdmodel: PADDLE model could not be converted: "
                                  r"Model can't be parsed$"),
    ],
)
def test_a_model_openvino_refuses_fails_the_import_with_its_reason(workbench, tmp_path, name, build, message):
    client, converter = workbench.client, workbench.servers["converter"]
    build(tmp_path / name)
    with pytest.raises(JobFailedError) as err:
        client.wait_job(client.import_model("bad", {MODEL: tmp_path / name}).id)
    error = err.value.job.error
    assert err.value.job.failed_service == "converter" and err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(message, error), error
    assert not any(noise in error for noise in NOISE), error
    assert "\n" not in error
    # the converter is still up and converts a good model
    with grpc.insecure_channel(converter.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    small_classifier(tmp_path / "good.onnx")
    assert client.wait_job(client.import_model("good", {MODEL: tmp_path / "good.onnx"}).id).output.model_id


# OpenVINO 2026.4's own text for the models above, and for a compile and a shape inference failure
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Check 'translate_map.count(decoder->get_op_type())' failed at "
         "src/frontends/tensorflow_lite/src/frontend.cpp:221:\nFrontEnd API failed with OpConversionFailure:\n"
         "No translator found for Convolution2DTransposeBias node.\n",
         "No translator found for Convolution2DTransposeBias node."),
        ("Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'false' failed at "
         "src/frontends/common/src/frontend.cpp:47:\nLoading input model\nPath '../../etc/passwd' resolves to "
         "'/etc/passwd' which is outside the base directory '/tmp/m'\n\n",
         "Loading input model: Path '../../etc/passwd' resolves to '/etc/passwd' which is outside the base "
         "directory '/tmp/m'"),
        ("Exception from src/inference/src/cpp/core.cpp:84:\nThe size of the initializer does not match the number "
         "of elements implied by its shape for tensor 'w' in the model\n",
         "The size of the initializer does not match the number of elements implied by its shape for tensor 'w' in "
         "the model"),
        ("Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'm_fw_ptr->ParseFromIstream(&pb_stream)' failed "
         "at src/frontends/paddle/src/input_model.cpp:400:\nFrontEnd API failed with GeneralFailure:\n"
         "Model can't be parsed\n\n",
         "Model can't be parsed"),
        ("Exception from src/inference/src/cpp/core.cpp:117:\nException from src/inference/src/dev/plugin.cpp:54:\n"
         "Exception from src/plugins/intel_cpu/src/nodes/kernels/x64/jit_uni_eltwise_generic.cpp:602:\n"
         "unsupported src_prc: f8e4m3\n\n\n",
         "unsupported src_prc: f8e4m3"),
        ("Check 'cmp::le(kernel, dim.get_length())' failed at "
         "src/core/shape_inference/include/pooling_shape_inference_util.hpp:149:\nWhile validating node "
         "'opset1::Convolution Convolution_8 (opset1::Parameter x[0]:f32[1,3,8,8]) -> ()' with friendly_name "
         "'Convolution_8':\nKernel after dilation has size (dim: 11) larger than the data shape after padding "
         "(dim: 8) at axis 0.\n",
         "in node 'Convolution_8': Kernel after dilation has size (dim: 11) larger than the data shape after "
         "padding (dim: 8) at axis 0."),
        ("a plain one-line reason", "a plain one-line reason"),
        ('Traceback (most recent call last):\n  File "x.py", line 3, in <module>\nValueError: bad', "ValueError: bad"),
    ],
)
def test_reason_keeps_what_follows_the_source_locations(text, expected):
    assert reason(RuntimeError(text)) == expected


def test_reason_falls_back_to_the_type_and_caps_the_length():
    assert reason(RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\n\n")) == "RuntimeError"
    assert reason(MemoryError()) == "MemoryError"
    long = reason(RuntimeError("Exception from src/a.cpp:1:\n" + "word " * 500))
    assert len(long) == LIMIT and long.endswith("…") and "\n" not in long
