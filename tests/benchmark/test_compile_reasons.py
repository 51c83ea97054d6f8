"""A model the CPU cannot compile fails its benchmark with OpenVINO's reason, not the C++ source location it opens
with, and the benchmark service goes on measuring."""

from __future__ import annotations

import grpc
import openvino as ov
import openvino.opset16 as ops
import pytest

from tests.small_models import small_classifier
from workbench.client import JobFailedError
from workbench.v1 import common_pb2

ROLE = common_pb2


def u1_adder(xml) -> None:
    """x + c on 1-bit values: a valid IR, but the CPU plugin takes no u1 input on any instruction set (the check is
    the plugin's own, before any kernel: f8 inputs, refused by the element-wise kernels, may be taken where
    AVX512-FP16 converts them)."""
    x = ops.parameter([1, 4], ov.Type.u1, name="x")
    c = ov.op.Constant(ov.Type.u1, ov.Shape([1, 4]), [1, 0, 1, 0])
    ov.save_model(ov.Model([ops.add(x, c)], [x], "u1_adder"), str(xml), compress_to_fp16=False)


def test_a_model_the_cpu_cannot_compile_fails_with_the_reason(workbench, tmp_path):
    client = workbench.client
    u1_adder(tmp_path / "u1.xml")
    imported = client.wait_job(client.import_model("u1", {ROLE.MODEL_FILE_ROLE_IR_XML: tmp_path / "u1.xml",
                                                          ROLE.MODEL_FILE_ROLE_IR_BIN: tmp_path / "u1.bin"}).id)
    project = client.create_project("u1 on CPU", model_id=imported.output.model_id)
    config = common_pb2.BenchmarkConfig(duration_seconds=0.2, random_inputs=True)
    with pytest.raises(JobFailedError) as err:
        client.wait_job(client.benchmark_project(project.id, config).id)
    error = err.value.job.error
    assert err.value.job.failed_service == "benchmark" and err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "CPU cannot compile the model: Not Implemented: CPU plugin: Input image format u1 is not supported" \
        in error, error
    assert "Exception from" not in error and "failed at src/" not in error and ".cpp:" not in error, error
    # the service still measures a model it can compile
    small_classifier(tmp_path / "good.onnx")
    good = client.wait_job(client.import_model("good", {ROLE.MODEL_FILE_ROLE_MODEL: tmp_path / "good.onnx"}).id)
    project = client.create_project("good on CPU", model_id=good.output.model_id)
    assert client.wait_job(client.benchmark_project(project.id, config).id).output.benchmark.throughput_fps > 0
