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


def f8_adder(xml) -> None:
    """x + c in f8e4m3: a valid IR, but the CPU plugin's element-wise kernels take no f8e4m3 input."""
    x = ops.parameter([1, 4], ov.Type.f8e4m3, name="x")
    c = ov.op.Constant(ov.Type.f8e4m3, ov.Shape([1, 4]), [0.5, 1.0, 1.5, 2.0])
    ov.save_model(ov.Model([ops.add(x, c)], [x], "f8_adder"), str(xml), compress_to_fp16=False)


def test_a_model_the_cpu_cannot_compile_fails_with_the_reason(workbench, tmp_path):
    client = workbench.client
    f8_adder(tmp_path / "f8.xml")
    imported = client.wait_job(client.import_model("f8", {ROLE.MODEL_FILE_ROLE_IR_XML: tmp_path / "f8.xml",
                                                          ROLE.MODEL_FILE_ROLE_IR_BIN: tmp_path / "f8.bin"}).id)
    project = client.create_project("f8 on CPU", model_id=imported.output.model_id)
    config = common_pb2.BenchmarkConfig(duration_seconds=0.2, random_inputs=True)
    with pytest.raises(JobFailedError) as err:
        client.wait_job(client.benchmark_project(project.id, config).id)
    error = err.value.job.error
    assert err.value.job.failed_service == "benchmark" and err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "CPU cannot compile the model: unsupported src_prc: f8e4m3" in error, error
    assert "Exception from" not in error and "failed at src/" not in error and ".cpp:" not in error, error
    # the service still measures a model it can compile
    small_classifier(tmp_path / "good.onnx")
    good = client.wait_job(client.import_model("good", {ROLE.MODEL_FILE_ROLE_MODEL: tmp_path / "good.onnx"}).id)
    project = client.create_project("good on CPU", model_id=good.output.model_id)
    assert client.wait_job(client.benchmark_project(project.id, config).id).output.benchmark.throughput_fps > 0
