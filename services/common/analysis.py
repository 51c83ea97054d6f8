"""What a model is: its tensors, size, cost of one inference, precision and task."""

from __future__ import annotations

from collections.abc import Collection
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
    # inputs only (see input_shapes): the shape the analysis took, and where it comes from
    analyzed_shape: str = ""
    shape_source: str = ""


@dataclass
class InputShape:
    """An input's shape as the analysis takes it: each dynamic dimension given the user's value or a default."""

    dims: list[int | None] | None  # None where no default applies; None for a dynamic rank
    origin: str  # "the model" or "the import's input shape"
    declared: str  # the input's shape, dynamic dimensions and all
    notes: list[str] = field(default_factory=list)  # what each dynamic dimension took

    @property
    def text(self) -> str:
        return "[...]" if self.dims is None else "[" + ",".join("?" if d is None else str(d) for d in self.dims) + "]"

    @property
    def source(self) -> str:
        """Where the shape comes from, in words: "the model [?,3,416,416]: batch 1 by default"."""
        return f"{self.origin} {self.declared}: {', '.join(self.notes)}" if self.notes else self.origin


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


def analyze(model: ov.Model, shaped: Collection[str] = ()) -> Analysis:
    """`shaped`: the inputs the user gave a shape (ConvertOptions.input_shapes' keys; "" names a single input).
    Dynamic input dimensions are analysed at input_shapes' values (GFLOPs and task counted at them)."""
    taken = input_shapes(model, shaped)
    counted, note = _at_shapes(model, taken)
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
    flops = sum(_flops(op) for op in counted.get_ordered_ops())
    info = model_info_strings(model)
    model_type = info.get("model_type", "")
    inputs = [_tensor(p) for p in model.inputs]
    for tensor, shape in zip(inputs, taken):
        tensor.analyzed_shape, tensor.shape_source = shape.text, shape.source + note
    return Analysis(
        inputs=inputs,
        outputs=[_tensor(p) for p in model.outputs],
        parameter_count=params,
        gflops=flops / 1e9,
        weight_bytes=weight_bytes,
        task=_task(counted, model_type),
        model_type=model_type,
        quantized=quantized,
    )


def input_shapes(model: ov.Model, shaped: Collection[str] = ()) -> list[InputShape]:
    """Each input's shape with its dynamic dimensions resolved where a default applies: the batch (the layout's N,
    else the first of two or more dimensions) is 1, height and width (the layout's H and W, else the last two of
    four) come from model_info's input_height and input_width (the Darknet family writes them); any other stays
    None. `shaped` as in analyze."""
    info = model_info_strings(model)
    taken = []
    for port in model.inputs:
        given = bool(set(port.get_names()) & set(shaped)) or ("" in shaped and len(model.inputs) == 1)
        origin = "the import's input shape" if given else "the model"
        shape = port.get_partial_shape()
        if shape.rank.is_dynamic:
            taken.append(InputShape(None, origin, str(shape), ["its rank is dynamic: no default applies"]))
            continue
        rank = shape.rank.get_length()
        layout = port.get_node().get_layout() if port.get_node().get_type_name() == "Parameter" else ov.Layout()
        batch, height, width = _role_index(layout, "batch", rank), _role_index(layout, "height", rank), \
            _role_index(layout, "width", rank)
        batch = 0 if batch is None and rank >= 2 and layout.empty else batch
        if layout.empty and rank == 4:
            height, width = 2, 3
        sizes = {height: ("height", "input_height"), width: ("width", "input_width")}
        dims: list[int | None] = []
        notes = []
        for i, dim in enumerate(shape):
            if dim.is_static:
                dims.append(dim.get_length())
            elif i == batch:
                dims.append(max(1, dim.get_min_length()))
                notes.append(f"batch {dims[-1]} by default")
            elif i in sizes and info.get(sizes[i][1], "").isdigit() and int(info[sizes[i][1]]) > 0:
                dims.append(int(info[sizes[i][1]]))
                notes.append(f"{sizes[i][0]} {dims[-1]} from model_info {sizes[i][1]}")
            else:
                dims.append(None)
                notes.append(f"{sizes[i][0] if i in sizes else f'dimension {i}'} dynamic: no default applies")
        taken.append(InputShape(dims, origin, str(shape), notes))
    return taken


def _role_index(layout: ov.Layout, role: str, rank: int) -> int | None:
    if layout.empty or not getattr(ov.layout_helpers, f"has_{role}")(layout):
        return None
    return getattr(ov.layout_helpers, f"{role}_idx")(layout) % rank


def _at_shapes(model: ov.Model, taken: list[InputShape]) -> tuple[ov.Model, str]:
    """The model reshaped to the inputs' resolved shapes (a copy) when that sets any dynamic dimension, and a
    note when it cannot be."""
    shapes = {}
    for port, shape in zip(model.inputs, taken):
        if shape.dims is not None and port.get_partial_shape().is_dynamic and any(
                d is not None for d, was in zip(shape.dims, port.get_partial_shape()) if was.is_dynamic):
            shapes[port.get_any_name()] = ov.PartialShape(
                [ov.Dimension(d) if d is not None else was for d, was in zip(shape.dims, port.get_partial_shape())])
    if not shapes:
        return model, ""
    try:
        counted = model.clone()
        counted.reshape(shapes)
        return counted, ""
    except Exception:  # noqa: BLE001 - the analysis stays at the declared shapes
        return model, "; the model does not reshape to it, so GFLOPs count only its static parts"


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
