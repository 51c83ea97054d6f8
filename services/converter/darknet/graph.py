"""The OpenVINO model of a parsed Darknet network, built with the opset API, its weights streamed in.

Batch norm is folded into each convolution's kernel and bias. The heads are not decoded: each becomes one
raw model output, the NCHW tensor that feeds the head, named ``yolo_<i>`` or ``region_<i>`` after the
head's layer index (Darknet numbers layers from 0, [net] excluded); a network without heads outputs its
last layer as ``layer_<i>``. Decoding belongs to whoever reads the outputs.

The one input, ``image``, is [1, channels, height, width] float32: RGB scaled to 0..1, as Darknet
feeds its networks. No preprocessing is baked in; model_info records it.
"""

from __future__ import annotations

import numpy as np

from services.converter.darknet.network import (
    BN_EPSILON, LEAKY_SLOPE, Conv, DarknetNetwork, Head, Identity, MaxPool, Route, Shortcut, Upsample,
)
from services.converter.darknet.weights import WeightStream

INPUT_NAME = "image"


def build_model(network: DarknetNetwork, stream: WeightStream):
    import openvino as ov
    import openvino.opset13 as ops

    image = ops.parameter([1, network.channels, network.height, network.width], np.float32, name=INPUT_NAME)
    image.output(0).get_tensor().set_names({INPUT_NAME})
    outputs: list = []  # one ov.Output per layer; None for heads
    for i, layer in enumerate(network.layers):
        prev = outputs[i - 1] if i else image.output(0)
        op = layer.op
        if isinstance(op, Conv):
            out = _convolution(ops, prev, op, stream, i)
        elif isinstance(op, Route):
            parts = []
            for src in op.inputs:
                x = outputs[src]
                if op.groups > 1:
                    x = ops.split(x, np.int64(1), op.groups).output(op.group_id)
                parts.append(x)
            out = parts[0] if len(parts) == 1 else ops.concat(parts, 1, name=f"route_{i}").output(0)
        elif isinstance(op, Shortcut):
            out = prev
            for src in op.inputs:
                out = ops.add(out, outputs[src], name=f"shortcut_{i}").output(0)
            out = _activation(ops, out, op.activation, f"shortcut_{i}")
        elif isinstance(op, MaxPool):
            out = ops.max_pool(prev, list(op.stride), [1, 1], list(op.pads_begin), list(op.pads_end),
                               [op.size, op.size], rounding_type="floor", name=f"maxpool_{i}").output(0)
        elif isinstance(op, Upsample):
            s = float(op.stride)
            out = ops.interpolate(prev, np.array([s, s], dtype=np.float32), "nearest", "scales",
                                  coordinate_transformation_mode="asymmetric", nearest_mode="floor",
                                  axes=np.array([2, 3], dtype=np.int64), name=f"upsample_{i}").output(0)
            if op.scale != 1.0:
                out = ops.multiply(out, np.float32(op.scale)).output(0)
        elif isinstance(op, Identity):
            out = prev
        elif isinstance(op, Head):
            out = None
        else:  # pragma: no cover - the cfg parser makes no other op
            raise AssertionError(op)
        outputs.append(out)

    results = []
    if network.heads:
        for head in network.heads:
            raw = outputs[head.layer - 1]
            raw.get_tensor().add_names({head.output})
            result = ops.result(raw, name=head.output)
            results.append(result)
    else:
        last = outputs[-1]
        name = network.output_names[0]
        last.get_tensor().add_names({name})
        results.append(ops.result(last, name=name))
    return ov.Model(results, [image], "darknet")


def _convolution(ops, x, conv: Conv, stream: WeightStream, i: int):
    n = conv.filters
    where = f"layer {i} [convolutional]"
    bias = stream.take(n, where)
    per_filter = (conv.in_channels // conv.groups) * conv.size * conv.size
    if conv.batch_normalize:
        scales = stream.take(n, where)
        mean = stream.take(n, where)
        var = stream.take(n, where)
        weights = stream.take(n * per_filter, where)
        factor = scales.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPSILON)
        kernel = (weights.reshape(n, per_filter) * factor[:, None].astype(np.float32)).astype(np.float32)
        bias = (bias - mean * factor).astype(np.float32)
    else:
        kernel = stream.take(n * per_filter, where)
    k = conv.size
    pads = [conv.pad, conv.pad]
    if conv.groups == 1:
        kernel = kernel.reshape(n, conv.in_channels, k, k)
        y = ops.convolution(x, ops.constant(kernel, name=f"conv_{i}/weights"), list(conv.stride), pads, pads,
                            [1, 1], name=f"conv_{i}")
    else:
        g = conv.groups
        kernel = kernel.reshape(g, n // g, conv.in_channels // g, k, k)
        y = ops.group_convolution(x, ops.constant(kernel, name=f"conv_{i}/weights"), list(conv.stride), pads, pads,
                                  [1, 1], name=f"conv_{i}")
    y = ops.add(y, ops.constant(bias.reshape(1, n, 1, 1), name=f"conv_{i}/bias"), name=f"conv_{i}/add_bias")
    return _activation(ops, y.output(0), conv.activation, f"conv_{i}")


def _activation(ops, x, name: str, node: str):
    label = f"{node}/{name}"
    if name == "linear":
        return x
    if name == "leaky":
        return ops.prelu(x, np.array([LEAKY_SLOPE], dtype=np.float32), name=label).output(0)
    if name == "relu":
        return ops.relu(x, name=label).output(0)
    if name == "relu6":
        return ops.clamp(x, 0.0, 6.0, name=label).output(0)
    if name == "logistic":
        return ops.sigmoid(x, name=label).output(0)
    if name == "tanh":
        return ops.tanh(x, name=label).output(0)
    if name == "mish":
        return ops.mish(x, name=label).output(0)
    if name in ("swish", "silu"):
        return ops.swish(x, name=label).output(0)
    if name == "elu":
        return ops.elu(x, 1.0, name=label).output(0)
    if name == "hard_mish":  # x > 0: x; -2 < x <= 0: x*x/2 + x; else 0  ==  x * clamp(x + 2, 0, 2) / 2
        gate = ops.clamp(ops.add(x, np.float32(2.0)), 0.0, 2.0)
        return ops.multiply(x, ops.multiply(gate, np.float32(0.5)), name=label).output(0)
    raise AssertionError(name)  # Section.activation checked the name
