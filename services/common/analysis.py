"""What a model is: its tensors, size, cost of one inference, precision and task."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import openvino as ov

from services.common.artifacts import StoredIR
from workbench_runtime.model_info import model_info_strings
from services.common.pb import ref_to_pb, struct_of
from workbench.v1 import common_pb2

# Weight-carrying constants are those big enough to be parameters, not shape or axis operands.
_MIN_WEIGHT_ELEMENTS = 2
_INT8 = {"i8", "u8", "i4", "u4"}


@dataclass
class TensorInfo:
    name: str
    shape: str
    element_type: str
    layout: str


@dataclass
class Analysis:
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    parameter_count: int
    gflops: float
    weight_bytes: dict[str, int] = field(default_factory=dict)
    task: str = "unknown"
    model_type: str = ""
    quantized: bool = False


def analyze(model: ov.Model) -> Analysis:
    params, weight_bytes = 0, {}
    flops = 0.0
    quantized = False
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "Constant":
            shape = op.get_output_shape(0)
            count = int(np.prod(list(shape))) if len(shape) else 1
            if count >= _MIN_WEIGHT_ELEMENTS and _feeds_compute(op):
                et = op.get_output_element_type(0).get_type_name()
                params += count
                weight_bytes[et] = weight_bytes.get(et, 0) + op.get_byte_size()
                quantized |= et in _INT8
        elif kind == "FakeQuantize":
            quantized = True
        flops += _flops(op)
    info = model_info_strings(model)
    model_type = info.get("model_type", "")
    return Analysis(
        inputs=[_tensor(p) for p in model.inputs],
        outputs=[_tensor(p) for p in model.outputs],
        parameter_count=params,
        gflops=flops / 1e9,
        weight_bytes=weight_bytes,
        task=_task(model, model_type),
        model_type=model_type,
        quantized=quantized,
    )


def _tensor(port: ov.Output) -> TensorInfo:
    names = sorted(port.get_names())
    layout = ""
    node = port.get_node()
    if node.get_type_name() == "Parameter":
        layout = str(node.get_layout()).strip("[]") if not node.get_layout().empty else ""
    return TensorInfo(
        name=names[0] if names else node.get_friendly_name(),
        shape=str(port.get_partial_shape()),
        element_type=port.get_element_type().get_type_name(),
        layout=layout,
    )


_COMPUTE = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "Multiply", "Add",
            "Convert", "FakeQuantize", "Subtract", "GroupConvolutionBackpropData", "Gather"}


def _feeds_compute(const: ov.Node) -> bool:
    return any(t.get_node().get_type_name() in _COMPUTE for t in const.output(0).get_target_inputs())


def _static(shape: ov.PartialShape) -> list[int] | None:
    return [d.get_length() for d in shape] if shape.is_static else None


def _flops(op: ov.Node) -> float:
    """Multiply-adds counted as 2 FLOPs, for the layers that dominate CNN and transformer cost."""
    kind = op.get_type_name()
    if kind in ("Convolution", "GroupConvolution"):
        out, weights = _static(op.get_output_partial_shape(0)), _static(op.get_input_partial_shape(1))
        if out is None or weights is None:
            return 0.0
        # each output element sums over I*k*k inputs: weights [O, I, k...], or [G, O/G, I/G, k...] grouped
        per_output = np.prod(weights[1:]) if kind == "Convolution" else np.prod(weights[2:])
        return 2.0 * float(np.prod(out)) * float(per_output)
    if kind == "MatMul":
        a, out = _static(op.get_input_partial_shape(0)), _static(op.get_output_partial_shape(0))
        if a is None or out is None or not a:
            return 0.0
        k = a[-2] if op.get_attributes().get("transpose_a") else a[-1]
        return 2.0 * float(np.prod(out)) * k
    return 0.0


def _task(model: ov.Model, model_type: str) -> str:
    kinds = {op.get_type_name() for op in model.get_ordered_ops()}
    if model_type or kinds & {"DetectionOutput", "RegionYolo", "NonMaxSuppression"}:
        return "detection"
    shapes = [_static(p.get_partial_shape()) for p in model.outputs]
    if any(s is not None and len(s) == 3 and s[-1] in (6, 7) for s in shapes):
        return "detection"
    if len(shapes) == 1 and shapes[0] is not None and len(shapes[0]) == 2 and shapes[0][1] > 1:
        return "classification"
    if len(shapes) == 1 and shapes[0] is not None and len(shapes[0]) == 4 and shapes[0][1] > 1 \
            and shapes[0][2] > 1 and model.inputs and _static(model.input(0).get_partial_shape()) \
            and shapes[0][2:] == _static(model.input(0).get_partial_shape())[2:]:
        return "segmentation"
    return "unknown"


def analysis_to_pb(analysis: Analysis) -> common_pb2.ModelAnalysis:
    return common_pb2.ModelAnalysis(
        inputs=[common_pb2.TensorInfo(**vars(t)) for t in analysis.inputs],
        outputs=[common_pb2.TensorInfo(**vars(t)) for t in analysis.outputs],
        parameter_count=analysis.parameter_count, gflops=analysis.gflops, weight_bytes=analysis.weight_bytes,
        task=analysis.task, model_type=analysis.model_type, quantized=analysis.quantized,
    )


def artifact_to_pb(ir: StoredIR, model: ov.Model, analysis: Analysis) -> common_pb2.ModelArtifact:
    return common_pb2.ModelArtifact(
        xml=ref_to_pb(ir.xml), bin=ref_to_pb(ir.bin), model_info=struct_of(model_info_strings(model)),
        analysis=analysis_to_pb(analysis),
    )
