"""Generated Darknet weights, and the numpy forward pass of a Darknet network that generating them takes.

Not converter code: they serve the reference models (services.reference_models makes full YOLOv4 from
data/darknet/yolov4.cfg with generated weights, for speed measurements) and the tests, where the numpy
forward pass is a reference for the activations OpenCV's Darknet reader lacks. The network they work
on comes from the converter's cfg parser, so the layer arithmetic is read from one place.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from services.converter.darknet.cfg import CfgSource, load_cfg
from services.converter.darknet.network import (
    BN_EPSILON, LEAKY_SLOPE, Conv, DarknetNetwork, Identity, MaxPool, Route, Shortcut, Upsample,
)
from services.converter.darknet.weights import write_header


def write_random_weights(cfg: CfgSource, path: str | os.PathLike, *, seed: int = 0,
                         version: tuple[int, int, int] = (0, 2, 0), width: int | None = None,
                         height: int | None = None) -> None:
    """Weights for a cfg whose activations stay of order one however deep it is (for speed tests and demos).

    Kernels are N(0, 1/fan_in), biases N(0, 0.1), batch-norm scales U(0.5, 1.5), rolling means 0. Each
    batch-normalised convolution's rolling variance is the mean square its input really gives it, one value
    for the whole layer: a numpy forward pass over a smooth random image at the input size (the cfg's, or
    width/height) measures it layer by layer as the file is written (about 3 s for YOLOv4 at 416x416). So
    the outputs mean nothing, but they are finite, of order one and not dominated by biases (about 0.4 rms
    on photographs for YOLOv4): a fair test of a converter, a runtime or a quantizer.
    """
    network = load_cfg(cfg, width=width, height=height)
    rng = np.random.default_rng(seed)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")

    with tmp.open("wb") as f:
        write_header(f, version)

        def convolve(i: int, conv: Conv, x: np.ndarray) -> np.ndarray:
            n = conv.filters
            fan_in = (conv.in_channels // conv.groups) * conv.size * conv.size
            bias = rng.normal(0.0, 0.1, n).astype(np.float32)
            kernel = rng.normal(0.0, 1.0 / math.sqrt(fan_in), n * fan_in).astype(np.float32)
            y = conv_numpy(x, kernel.reshape(n, -1, conv.size, conv.size), conv)
            bias.tofile(f)
            if conv.batch_normalize:
                scales = rng.uniform(0.5, 1.5, n).astype(np.float32)
                # one scale for the whole layer: per-channel statistics would blow quiet channels up on
                # another input
                mean = np.zeros(n, dtype=np.float32)
                var = np.full(n, max(float(np.mean(np.square(y, dtype=np.float64))), 1e-6), dtype=np.float32)
                for values in (scales, mean, var):
                    values.tofile(f)
                y = (y - mean[:, None, None]) * (scales / np.sqrt(var + BN_EPSILON))[:, None, None]
            kernel.tofile(f)
            return y + bias[:, None, None]

        forward_numpy(network, _smooth_image(network, rng), convolve)
    tmp.replace(path)


def _smooth_image(network: DarknetNetwork, rng: np.random.Generator) -> np.ndarray:
    """A random picture-like input in 0..1: coarse noise blown up, a little fine noise on top."""
    coarse = rng.uniform(0, 1, (network.channels, network.height // 8 + 1, network.width // 8 + 1))
    image = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, : network.height, : network.width]
    image = 0.9 * image + 0.1 * rng.uniform(0, 1, image.shape)
    return image.astype(np.float32)


def conv_numpy(x: np.ndarray, kernel: np.ndarray, conv: Conv) -> np.ndarray:
    """Darknet's convolution without bias: x [C, H, W], kernel [O, C/groups, k, k] -> [O, OH, OW]."""
    k, p, g = conv.size, conv.pad, conv.groups
    sy, sx = conv.stride
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::sy, ::sx]
    c, oh, ow = windows.shape[:3]
    cols = windows.reshape(g, c // g, oh, ow, k, k).transpose(0, 1, 4, 5, 2, 3).reshape(g, (c // g) * k * k, oh * ow)
    out = np.matmul(kernel.reshape(g, -1, (c // g) * k * k), cols)
    return out.reshape(-1, oh, ow)


def forward_numpy(network: DarknetNetwork, image: np.ndarray, convolve) -> list[np.ndarray | None]:
    """Darknet's forward pass in numpy, one image [C, H, W]; convolve(i, conv, x) gives a convolution's
    output before its activation. Slow: for small inputs, references and calibration."""
    outputs: list[np.ndarray | None] = []
    for i, layer in enumerate(network.layers):
        x = outputs[i - 1] if i else image
        op = layer.op
        if isinstance(op, Conv):
            y = activation_numpy(op.activation, convolve(i, op, x))
        elif isinstance(op, Route):
            y = np.concatenate([np.split(outputs[j], op.groups, axis=0)[op.group_id] for j in op.inputs], axis=0)
        elif isinstance(op, Shortcut):
            y = activation_numpy(op.activation, x + sum(outputs[j] for j in op.inputs))
        elif isinstance(op, MaxPool):
            (bh, bw), (eh, ew) = op.pads_begin, op.pads_end
            xp = np.pad(x, ((0, 0), (bh, eh), (bw, ew)), constant_values=-np.inf)
            windows = np.lib.stride_tricks.sliding_window_view(xp, (op.size, op.size), axis=(1, 2))
            y = windows[:, :: op.stride[0], :: op.stride[1]].max(axis=(3, 4))[:, : layer.shape[1], : layer.shape[2]]
        elif isinstance(op, Upsample):
            y = np.repeat(np.repeat(x, op.stride, axis=1), op.stride, axis=2) * np.float32(op.scale)
        elif isinstance(op, Identity):
            y = x
        else:  # a head: its input is the output
            y = None
        outputs.append(None if y is None else y.astype(np.float32, copy=False))
    return outputs


def activation_numpy(name: str, x: np.ndarray) -> np.ndarray:
    """Darknet's activations in numpy (a reference for the tests and for write_random_weights)."""
    if name == "linear":
        return x
    if name == "leaky":
        return np.where(x > 0, x, LEAKY_SLOPE * x)
    if name == "relu":
        return np.maximum(x, 0)
    if name == "relu6":
        return np.clip(x, 0, 6)
    if name == "logistic":
        return 1 / (1 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name == "mish":
        return x * np.tanh(np.logaddexp(0, x))
    if name in ("swish", "silu"):
        return x / (1 + np.exp(-x))
    if name == "elu":
        return np.where(x >= 0, x, np.expm1(np.minimum(x, 0)))
    if name == "hard_mish":
        return np.where(x > 0, x, np.where(x > -2, x * x / 2 + x, 0))
    raise AssertionError(name)
