"""Small models the tests build themselves (no downloads): an ONNX image classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import openvino as ov
from onnx import TensorProto, helper, numpy_helper

from services.converter.convert import ModelFiles, load

RNG = np.random.default_rng(7)


def small_classifier(path, classes: int = 10):
    """Conv(8, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(classes): a tiny image classifier."""
    w = numpy_helper.from_array(RNG.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(RNG.normal(0, 0.1, (8,)).astype(np.float32), "b")
    fc = numpy_helper.from_array(RNG.normal(0, 0.2, (classes, 8)).astype(np.float32), "fc")
    fc_b = numpy_helper.from_array(RNG.normal(0, 0.1, classes).astype(np.float32), "fc_b")
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        [w, b, fc, fc_b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model


def small_model(folder: Path) -> ov.Model:
    """small_classifier as the converter imports it."""
    small_classifier(folder / "m.onnx")
    return load("ONNX", ModelFiles(model=folder / "m.onnx"), folder)[0]


def images(count: int) -> list[np.ndarray]:
    """Random [3, 32, 32] inputs for small_model, the same for the same count."""
    return [np.random.default_rng(i).random((3, 32, 32), dtype=np.float32) for i in range(count)]
