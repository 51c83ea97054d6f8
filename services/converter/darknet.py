"""Darknet frontend: an OpenVINO model built directly from a Darknet .cfg and .weights with the opset API.

Layers: [net]/[network], [convolutional] (batch norm folded into the weights and bias; groups; stride;
Darknet's pad/padding rule), [route] (layers, groups/group_id), [shortcut], [maxpool] (Darknet's
padding: size-1 in all, the smaller half first), [upsample], [dropout] (identity at inference), and the
heads [yolo] and [region]. The heads are not decoded: each becomes one raw model output, the NCHW
tensor that feeds the head, named ``yolo_<i>`` or ``region_<i>`` after the head's layer index
(Darknet numbers layers from 0, [net] excluded). Decoding belongs to whoever reads the outputs; the
facts it needs go into the model's ``model_info`` rt_info (see services.converter.model_info).

The one input, ``image``, is [1, channels, height, width] float32: RGB scaled to 0..1, as Darknet
feeds its networks. No preprocessing is baked in; model_info records it.

Weights files: major, minor, revision as int32, then "seen" as int64 when (major*10+minor) >= 2 and
major < 1000 and minor < 1000, else as int32; then float32 values, for each [convolutional] in cfg
order: biases, [scales, rolling_mean, rolling_var when batch_normalize=1], weights (O, I/groups, k, k).
Weights are read one layer at a time from the file, so memory holds the built model and one layer.

Domain code: failures raise services.common.errors.InvalidArgument, never gRPC errors.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from services.common.errors import InvalidArgument
from services.common.model_info import write_model_info
from services.converter.model_info import darknet_model_info

INPUT_NAME = "image"
# AlexeyAB darknet (which YOLOv4 comes from) folds batch norm with scale / sqrt(var + .00001) in
# fuse_conv_batchnorm, as normalize_cpu does; OpenCV's importer uses 1e-6 instead.
BN_EPSILON = 1e-5
LEAKY_SLOPE = 0.1
# Sanity limits of a cfg: an absurd size (width=1000000, an upsample by 100000) would build a model
# that no device can run, and every later step would fail far from the cause.
MAX_INPUT_SIDE = 16384
MAX_TENSOR_VALUES = 2**31 - 1  # per layer output, C*H*W

# Darknet activation names this frontend builds (silu is accepted as another name for swish).
ACTIVATIONS = ("linear", "leaky", "relu", "relu6", "logistic", "tanh", "mish", "swish", "silu", "hard_mish", "elu")

CfgSource = Union[str, os.PathLike, "DarknetNetwork"]

_NET_SECTIONS = ("net", "network")
_LAYER_TYPES = ("convolutional", "conv", "route", "shortcut", "maxpool", "max", "upsample", "dropout", "yolo", "region")
_CONV_UNSUPPORTED = ("xnor", "binary", "antialiasing", "deform", "share_index", "assisted_excitation")


# --------------------------------------------------------------------------------------------- the cfg


@dataclass(frozen=True)
class Section:
    """One [section] of a cfg: its type, its options as written, where it is."""

    kind: str
    options: dict[str, str]
    line: int  # 1-based cfg line of the [header]
    index: int  # Darknet's layer index; -1 for [net]

    def where(self) -> str:
        if self.index < 0:
            return f"[{self.kind}] (cfg line {self.line})"
        return f"layer {self.index} [{self.kind}] (cfg line {self.line})"

    def _bad(self, key: str, value: str, what: str) -> InvalidArgument:
        return InvalidArgument(f"{self.where()}: {key}={value!r} {what}", field="cfg", reason="DARKNET_CFG_VALUE")

    def integer(self, key: str, default: int | None = None, *, minimum: int | None = None) -> int:
        raw = self.options.get(key)
        if raw is None:
            if default is None:
                raise InvalidArgument(f"{self.where()}: {key}= is missing", field="cfg", reason="DARKNET_CFG_VALUE")
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self._bad(key, raw, "is not an integer") from None
        if minimum is not None and value < minimum:
            raise self._bad(key, raw, f"must be at least {minimum}")
        return value

    def number(self, key: str, default: float) -> float:
        raw = self.options.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise self._bad(key, raw, "is not a number") from None
        if not math.isfinite(value):
            raise self._bad(key, raw, "is not a finite number")
        return value

    def integers(self, key: str, default: tuple[int, ...] | None = None) -> tuple[int, ...]:
        raw = self.options.get(key)
        if raw is None:
            if default is None:
                raise InvalidArgument(f"{self.where()}: {key}= is missing", field="cfg", reason="DARKNET_CFG_VALUE")
            return default
        try:
            values = tuple(int(v) for v in raw.split(",") if v != "")
        except ValueError:
            raise self._bad(key, raw, "is not a comma-separated list of integers") from None
        if not values:
            raise self._bad(key, raw, "is empty")
        return values

    def numbers(self, key: str) -> tuple[float, ...]:
        raw = self.options.get(key)
        if raw is None:
            return ()
        try:
            values = tuple(float(v) for v in raw.split(",") if v != "")
        except ValueError:
            raise self._bad(key, raw, "is not a comma-separated list of numbers") from None
        if not all(math.isfinite(v) for v in values):
            raise self._bad(key, raw, "holds a value that is not a finite number")
        return values

    def activation(self, default: str) -> str:
        name = self.options.get("activation", default)
        if name not in ACTIVATIONS:
            raise InvalidArgument(
                f"{self.where()}: activation={name!r} is not supported (supported: {', '.join(ACTIVATIONS)})",
                field="cfg",
                reason="DARKNET_UNSUPPORTED",
            )
        return name


def parse_sections(text: str) -> list[Section]:
    """Split cfg text into sections the way Darknet reads it: whitespace dropped, '#'/';' comments skipped."""
    sections: list[Section] = []
    layer = -1
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"\s+", "", raw.split("#", 1)[0])
        if not line or line.startswith(";"):
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise InvalidArgument(f"cfg line {number}: malformed section header {raw.strip()!r}",
                                      field="cfg", reason="DARKNET_CFG_SYNTAX")
            kind = line[1:-1].lower()
            index = -1 if not sections else layer + 1
            if sections:
                layer += 1
            sections.append(Section(kind, {}, number, index))
            continue
        if "=" not in line:
            raise InvalidArgument(f"cfg line {number}: expected key=value, got {raw.strip()!r}",
                                  field="cfg", reason="DARKNET_CFG_SYNTAX")
        if not sections:
            raise InvalidArgument(f"cfg line {number}: option {raw.strip()!r} comes before any [section]",
                                  field="cfg", reason="DARKNET_CFG_SYNTAX")
        key, value = line.split("=", 1)
        sections[-1].options[key] = value
    if not sections:
        raise InvalidArgument("the cfg holds no sections; a Darknet cfg starts with [net]",
                              field="cfg", reason="DARKNET_CFG_SYNTAX")
    if sections[0].kind not in _NET_SECTIONS:
        raise InvalidArgument(f"the cfg must start with [net], not [{sections[0].kind}] (cfg line {sections[0].line})",
                              field="cfg", reason="DARKNET_CFG_SYNTAX")
    for extra in sections[1:]:
        if extra.kind in _NET_SECTIONS:
            raise InvalidArgument(f"a second [{extra.kind}] at cfg line {extra.line}", field="cfg",
                                  reason="DARKNET_CFG_SYNTAX")
    if len(sections) == 1:
        raise InvalidArgument("the cfg has a [net] but no layers", field="cfg", reason="DARKNET_CFG_SYNTAX")
    return sections


# ------------------------------------------------------------------------------------- resolved layers

Shape = tuple[int, int, int]  # C, H, W


@dataclass(frozen=True)
class Conv:
    filters: int
    in_channels: int
    size: int
    stride: tuple[int, int]  # y, x
    pad: int  # symmetric, every side
    groups: int
    batch_normalize: bool
    activation: str

    @property
    def weight_count(self) -> int:
        """float32 values this layer takes from the weights file."""
        per_filter = (self.in_channels // self.groups) * self.size * self.size
        return self.filters * (1 + (3 if self.batch_normalize else 0) + per_filter)


@dataclass(frozen=True)
class Route:
    inputs: tuple[int, ...]  # absolute layer indexes
    groups: int
    group_id: int


@dataclass(frozen=True)
class Shortcut:
    inputs: tuple[int, ...]  # absolute layer indexes added to the previous layer
    activation: str


@dataclass(frozen=True)
class MaxPool:
    size: int
    stride: tuple[int, int]  # y, x
    pads_begin: tuple[int, int]
    pads_end: tuple[int, int]


@dataclass(frozen=True)
class Upsample:
    stride: int
    scale: float


@dataclass(frozen=True)
class Identity:
    pass


@dataclass(frozen=True)
class Head:
    """A [yolo] or [region] layer: its input becomes a raw model output."""

    layer: int  # index of the [yolo]/[region] layer; its input is layer - 1
    kind: str  # "yolo" | "region"
    output: str  # model output name
    classes: int
    anchors: tuple[float, ...]  # every anchor of the layer, flat: w0, h0, w1, h1, ...
    mask: tuple[int, ...]  # the anchors this head predicts with (all of them for [region])
    scale_x_y: float
    new_coords: bool
    coords: int
    softmax: bool  # [region]: class scores through a softmax
    grid: tuple[int, int]  # H, W of the output
    channels: int

    @property
    def masked_anchors(self) -> tuple[tuple[float, float], ...]:
        return tuple((self.anchors[2 * m], self.anchors[2 * m + 1]) for m in self.mask)


Op = Union[Conv, Route, Shortcut, MaxPool, Upsample, Identity, Head]


@dataclass(frozen=True)
class Layer:
    section: Section
    op: Op
    shape: Shape  # output C, H, W


@dataclass(frozen=True)
class DarknetNetwork:
    """A parsed, validated cfg: its input, every layer with its output shape, its heads."""

    width: int
    height: int
    channels: int
    layers: tuple[Layer, ...]
    heads: tuple[Head, ...] = field(default=())

    @property
    def convolutions(self) -> tuple[Conv, ...]:
        return tuple(layer.op for layer in self.layers if isinstance(layer.op, Conv))

    @property
    def weight_count(self) -> int:
        """float32 values the weights file holds after its header."""
        return sum(conv.weight_count for conv in self.convolutions)

    @property
    def output_names(self) -> tuple[str, ...]:
        if self.heads:
            return tuple(head.output for head in self.heads)
        return (f"layer_{len(self.layers) - 1}",)


def parse_cfg(text: str, *, width: int | None = None, height: int | None = None) -> DarknetNetwork:
    """Parse and check cfg text; width/height override the [net] input size."""
    sections = parse_sections(text)
    net = sections[0]
    w = width if width is not None else net.integer("width", minimum=1)
    h = height if height is not None else net.integer("height", minimum=1)
    c = net.integer("channels", 3, minimum=1)
    if w < 1 or h < 1:
        raise InvalidArgument(f"the input size must be positive, got {w}x{h}", field="cfg", reason="DARKNET_CFG_VALUE")
    if w > MAX_INPUT_SIDE or h > MAX_INPUT_SIDE:
        raise InvalidArgument(f"{net.where()}: width={w} height={h}: the input may be at most {MAX_INPUT_SIDE} "
                              "pixels a side", field="cfg", reason="DARKNET_CFG_VALUE")
    _check_values(net, (c, h, w), "input")
    layers: list[Layer] = []
    heads: list[Head] = []
    for section in sections[1:]:
        prev = layers[-1].shape if layers else (c, h, w)
        op, shape = _resolve(section, prev, layers)
        _check_values(section, shape, "output")
        if isinstance(op, Head):
            heads.append(op)
        layers.append(Layer(section, op, shape))
    return DarknetNetwork(w, h, c, tuple(layers), tuple(heads))


def _check_values(section: Section, shape: Shape, what: str) -> None:
    if math.prod(shape) > MAX_TENSOR_VALUES:
        raise InvalidArgument(f"{section.where()}: its {what} {_fmt(shape)} holds {math.prod(shape)} values, more than "
                              f"the {MAX_TENSOR_VALUES} a layer may have", field="cfg", reason="DARKNET_CFG_SHAPE")


def load_cfg(cfg: CfgSource, *, width: int | None = None, height: int | None = None) -> DarknetNetwork:
    """A DarknetNetwork from a cfg path (or one already parsed)."""
    if isinstance(cfg, DarknetNetwork):
        if (width is None or width == cfg.width) and (height is None or height == cfg.height):
            return cfg
        raise ValueError("pass the cfg path, not a parsed network, to change its input size")
    try:
        text = Path(cfg).read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise InvalidArgument(f"cannot read the cfg: {error.strerror}", field="cfg",
                              reason="DARKNET_CFG_READ") from None
    return parse_cfg(text, width=width, height=height)


def _index(section: Section, ref: int, count: int, key: str) -> int:
    """An absolute layer index from a cfg reference (negative: relative to this layer)."""
    absolute = ref if ref >= 0 else section.index + ref
    if not 0 <= absolute < count:
        raise InvalidArgument(
            f"{section.where()}: {key}= refers to layer {ref}"
            + (f" (layer {absolute})" if ref < 0 else "")
            + f", which does not exist: this layer can only use layers 0..{count - 1}",
            field="cfg", reason="DARKNET_CFG_REFERENCE")
    return absolute


def _source(section: Section, layers: list[Layer], absolute: int) -> Layer:
    layer = layers[absolute]
    if isinstance(layer.op, Head):
        raise InvalidArgument(
            f"{section.where()} uses the output of layer {absolute} [{layer.section.kind}], a detection head whose "
            "decoded output this converter does not build; refer to the layer before it instead",
            field="cfg", reason="DARKNET_UNSUPPORTED")
    return layer


def _reject(section: Section, keys: tuple[str, ...]) -> None:
    for key in keys:
        value = section.options.get(key)
        if value is not None and value not in ("0", ""):
            raise InvalidArgument(f"{section.where()}: {key}={value} is not supported", field="cfg",
                                  reason="DARKNET_UNSUPPORTED")


def _resolve(section: Section, prev: Shape, layers: list[Layer]) -> tuple[Op, Shape]:
    kind = section.kind
    c, h, w = prev
    if kind not in _LAYER_TYPES:
        raise InvalidArgument(
            f"unknown layer type [{kind}] at layer {section.index} (cfg section {section.index + 1}, line "
            f"{section.line}); supported: [convolutional], [route], [shortcut], [maxpool], [upsample], [dropout], "
            "[yolo], [region]", field="cfg", reason="DARKNET_UNSUPPORTED")
    if kind != "route" and layers:
        _source(section, layers, len(layers) - 1)  # nothing reads a head's output
    if kind in ("convolutional", "conv"):
        _reject(section, _CONV_UNSUPPORTED)
        if section.integer("dilation", 1) != 1:
            raise InvalidArgument(f"{section.where()}: dilation= is not supported", field="cfg",
                                  reason="DARKNET_UNSUPPORTED")
        filters = section.integer("filters", 1, minimum=1)
        size = section.integer("size", 1, minimum=1)
        stride = section.integer("stride", 1, minimum=1)
        sy = section.integer("stride_y", -1)
        sx = section.integer("stride_x", -1)
        sy, sx = (sy if sy >= 1 else stride), (sx if sx >= 1 else stride)
        pad = size // 2 if section.integer("pad", 0) else section.integer("padding", 0, minimum=0)
        groups = section.integer("groups", 1, minimum=1)
        if c % groups or filters % groups:
            raise InvalidArgument(
                f"{section.where()}: groups={groups} must divide both the input channels ({c}) and filters ({filters})",
                field="cfg", reason="DARKNET_CFG_VALUE")
        out_h = (h + 2 * pad - size) // sy + 1
        out_w = (w + 2 * pad - size) // sx + 1
        if out_h < 1 or out_w < 1:
            raise InvalidArgument(f"{section.where()}: a {size}x{size} kernel does not fit its {h}x{w} input",
                                  field="cfg", reason="DARKNET_CFG_SHAPE")
        conv = Conv(filters, c, size, (sy, sx), pad, groups, bool(section.integer("batch_normalize", 0)),
                    section.activation("logistic"))
        return conv, (filters, out_h, out_w)

    if kind == "route":
        refs = section.integers("layers")
        inputs = tuple(_index(section, r, len(layers), "layers") for r in refs)
        groups = section.integer("groups", 1, minimum=1)
        group_id = section.integer("group_id", 0, minimum=0)
        if group_id >= groups:
            raise InvalidArgument(f"{section.where()}: group_id={group_id} must be below groups={groups}",
                                  field="cfg", reason="DARKNET_CFG_VALUE")
        sources = [_source(section, layers, i) for i in inputs]
        spatial = {src.shape[1:] for src in sources}
        if len(spatial) > 1:
            sizes = ", ".join(f"layer {i}: {s.shape[1]}x{s.shape[2]}" for i, s in zip(inputs, sources))
            raise InvalidArgument(f"{section.where()}: the layers it joins differ in size ({sizes})",
                                  field="cfg", reason="DARKNET_CFG_SHAPE")
        for i, src in zip(inputs, sources):
            if src.shape[0] % groups:
                raise InvalidArgument(
                    f"{section.where()}: groups={groups} does not divide the {src.shape[0]} channels of layer {i}",
                    field="cfg", reason="DARKNET_CFG_VALUE")
        channels = sum(src.shape[0] // groups for src in sources)
        oh, ow = sources[0].shape[1:]
        return Route(inputs, groups, group_id), (channels, oh, ow)

    if kind == "shortcut":
        if section.options.get("weights_type", "none") != "none":
            raise InvalidArgument(f"{section.where()}: weights_type={section.options['weights_type']} is not supported",
                                  field="cfg", reason="DARKNET_UNSUPPORTED")
        refs = section.integers("from")
        inputs = tuple(_index(section, r, len(layers), "from") for r in refs)
        for i in inputs:
            src = _source(section, layers, i)
            if src.shape != prev:
                raise InvalidArgument(
                    f"{section.where()}: layer {i} has shape {_fmt(src.shape)} but the previous layer has "
                    f"{_fmt(prev)}; this converter adds only equal shapes", field="cfg", reason="DARKNET_CFG_SHAPE")
        return Shortcut(inputs, section.activation("linear")), prev

    if kind in ("maxpool", "max"):
        _reject(section, ("maxpool_depth", "antialiasing", "out_channels"))
        stride = section.integer("stride", 1, minimum=1)
        sy = section.integer("stride_y", stride, minimum=1)
        sx = section.integer("stride_x", stride, minimum=1)
        size = section.integer("size", stride, minimum=1)
        padding = section.integer("padding", size - 1, minimum=0)
        begin = padding // 2  # Darknet offsets the window by -padding/2
        out_h = (h + padding - size) // sy + 1
        out_w = (w + padding - size) // sx + 1
        if out_h < 1 or out_w < 1:
            raise InvalidArgument(f"{section.where()}: a {size}x{size} window does not fit its {h}x{w} input",
                                  field="cfg", reason="DARKNET_CFG_SHAPE")
        # the rest of the padding after: with floor rounding any input size gets Darknet's output size
        end = padding - begin
        return MaxPool(size, (sy, sx), (begin, begin), (end, end)), (c, out_h, out_w)

    if kind == "upsample":
        stride = section.integer("stride", 2)
        if stride < 1:
            raise InvalidArgument(f"{section.where()}: stride={stride} (downsampling) is not supported",
                                  field="cfg", reason="DARKNET_UNSUPPORTED")
        return Upsample(stride, section.number("scale", 1.0)), (c, h * stride, w * stride)

    if kind == "dropout":
        return Identity(), prev

    if kind in ("yolo", "region"):
        return _head(section, prev)

    raise AssertionError(kind)  # _LAYER_TYPES lists every kind handled above


def _head(section: Section, prev: Shape) -> tuple[Head, Shape]:
    c, h, w = prev
    classes = section.integer("classes", 20, minimum=1)
    num = section.integer("num", 1, minimum=1)
    anchors = section.numbers("anchors")
    if not anchors:
        raise InvalidArgument(f"{section.where()}: anchors= is missing", field="cfg", reason="DARKNET_CFG_VALUE")
    if len(anchors) < 2 * num:
        raise InvalidArgument(
            f"{section.where()}: num={num} needs {2 * num} anchor values, anchors= has {len(anchors)}",
            field="cfg", reason="DARKNET_CFG_VALUE")
    anchors = anchors[: 2 * num]
    if section.kind == "yolo":
        mask = section.integers("mask", tuple(range(num)))
        bad = [m for m in mask if not 0 <= m < num]
        if bad:
            raise InvalidArgument(f"{section.where()}: mask= holds {bad[0]}, but num={num}", field="cfg",
                                  reason="DARKNET_CFG_VALUE")
        coords, softmax = 4, False
        expected = len(mask) * (classes + 5)
        formula = f"{len(mask)} anchors x ({classes} classes + 5)"
    else:
        mask = tuple(range(num))
        coords = section.integer("coords", 4, minimum=1)
        softmax = bool(section.integer("softmax", 0))
        expected = num * (classes + coords + 1)
        formula = f"{num} anchors x ({classes} classes + {coords} coords + 1)"
    if c != expected:
        raise InvalidArgument(
            f"{section.where()} needs {formula} = {expected} channels from the layer before it, which gives {c}: "
            "set filters= of that [convolutional] to match classes= and mask=/num=",
            field="cfg", reason="DARKNET_CFG_SHAPE")
    head = Head(section.index, section.kind, f"{section.kind}_{section.index}", classes, anchors, tuple(mask),
                section.number("scale_x_y", 1.0), bool(section.integer("new_coords", 0)), coords, softmax, (h, w), c)
    return head, prev


def _fmt(shape: Shape) -> str:
    return "x".join(str(v) for v in shape)


def expected_weight_count(cfg: CfgSource) -> int:
    """float32 values a Darknet weights file for this cfg holds after its header."""
    return load_cfg(cfg).weight_count


# --------------------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WeightsHeader:
    major: int
    minor: int
    revision: int
    seen: int
    size: int  # bytes: 20 with a 64-bit "seen", 16 with a 32-bit one

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}.{self.revision}"


def seen_is_int64(major: int, minor: int) -> bool:
    return (major * 10 + minor) >= 2 and major < 1000 and minor < 1000


def read_weights_header(f: BinaryIO, file_size: int) -> WeightsHeader:
    if file_size < 12:
        raise InvalidArgument(f"truncated weights: the file is {file_size} bytes, shorter than a Darknet header",
                              field="weights", reason="DARKNET_WEIGHTS_SIZE")
    major, minor, revision = (int(v) for v in np.frombuffer(f.read(12), dtype="<i4"))
    wide = seen_is_int64(major, minor)
    size = 20 if wide else 16
    if file_size < size:
        raise InvalidArgument(f"truncated weights: the file is {file_size} bytes, shorter than its {size}-byte header",
                              field="weights", reason="DARKNET_WEIGHTS_SIZE")
    seen = int(np.frombuffer(f.read(size - 12), dtype="<i8" if wide else "<i4")[0])
    return WeightsHeader(major, minor, revision, seen, size)


def check_weights_size(network: DarknetNetwork, header: WeightsHeader, file_size: int) -> None:
    expected = header.size + 4 * network.weight_count
    if file_size == expected:
        return
    problem = "truncated weights" if file_size < expected else "over-long weights"
    message = (f"{problem}: expected {expected} bytes of weights for this cfg ({header.size}-byte header, version "
               f"{header.version}, + {network.weight_count} float32 values), got {file_size}")
    other = (16 if header.size == 20 else 20) + 4 * network.weight_count
    if file_size == other:
        message += (f"; the size would fit a header whose 'seen' is {'32' if header.size == 20 else '64'}-bit, "
                    "but version " + header.version + " says otherwise")
    else:
        message += "; the weights were trained for another cfg (check classes=, filters= and the layer list)"
    raise InvalidArgument(message, field="weights", reason="DARKNET_WEIGHTS_SIZE")


class _WeightStream:
    """Reads a layer's float32 values at a time from an open weights file."""

    def __init__(self, f: BinaryIO):
        self._f = f

    def take(self, count: int, what: str) -> np.ndarray:
        values = np.fromfile(self._f, dtype="<f4", count=count)
        if values.size != count:  # the size check makes this unreachable unless the file changes under us
            raise InvalidArgument(f"truncated weights while reading {what}", field="weights",
                                  reason="DARKNET_WEIGHTS_SIZE")
        return values.astype(np.float32, copy=False)


def write_weights(path: str | os.PathLike, values: np.ndarray | list[np.ndarray], *,
                  version: tuple[int, int, int] = (0, 2, 0), seen: int = 0) -> None:
    """Write a Darknet weights file: header in the width its version implies, then float32 values."""
    major, minor, revision = version
    with open(path, "wb") as f:
        np.array([major, minor, revision], dtype="<i4").tofile(f)
        np.array([seen], dtype="<i8" if seen_is_int64(major, minor) else "<i4").tofile(f)
        for chunk in values if isinstance(values, list) else [values]:
            np.asarray(chunk, dtype="<f4").tofile(f)


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
    major, minor, revision = version

    with tmp.open("wb") as f:
        np.array([major, minor, revision], dtype="<i4").tofile(f)
        np.array([0], dtype="<i8" if seen_is_int64(major, minor) else "<i4").tofile(f)

        def convolve(i: int, conv: Conv, x: np.ndarray) -> np.ndarray:
            n = conv.filters
            fan_in = (conv.in_channels // conv.groups) * conv.size * conv.size
            bias = rng.normal(0.0, 0.1, n).astype(np.float32)
            kernel = rng.normal(0.0, 1.0 / math.sqrt(fan_in), n * fan_in).astype(np.float32)
            y = _conv_numpy(x, kernel.reshape(n, -1, conv.size, conv.size), conv)
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

        _forward_numpy(network, _smooth_image(network, rng), convolve)
    tmp.replace(path)


def _smooth_image(network: DarknetNetwork, rng: np.random.Generator) -> np.ndarray:
    """A random picture-like input in 0..1: coarse noise blown up, a little fine noise on top."""
    coarse = rng.uniform(0, 1, (network.channels, network.height // 8 + 1, network.width // 8 + 1))
    image = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, : network.height, : network.width]
    image = 0.9 * image + 0.1 * rng.uniform(0, 1, image.shape)
    return image.astype(np.float32)


def _conv_numpy(x: np.ndarray, kernel: np.ndarray, conv: Conv) -> np.ndarray:
    """Darknet's convolution without bias: x [C, H, W], kernel [O, C/groups, k, k] -> [O, OH, OW]."""
    k, p, g = conv.size, conv.pad, conv.groups
    sy, sx = conv.stride
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::sy, ::sx]
    c, oh, ow = windows.shape[:3]
    cols = windows.reshape(g, c // g, oh, ow, k, k).transpose(0, 1, 4, 5, 2, 3).reshape(g, (c // g) * k * k, oh * ow)
    out = np.matmul(kernel.reshape(g, -1, (c // g) * k * k), cols)
    return out.reshape(-1, oh, ow)


def _forward_numpy(network: DarknetNetwork, image: np.ndarray, convolve) -> list[np.ndarray | None]:
    """Darknet's forward pass in numpy, one image [C, H, W]; convolve(i, conv, x) gives a convolution's
    output before its activation. Slow: for small inputs, references and calibration."""
    outputs: list[np.ndarray | None] = []
    for i, layer in enumerate(network.layers):
        x = outputs[i - 1] if i else image
        op = layer.op
        if isinstance(op, Conv):
            y = _activation_numpy(op.activation, convolve(i, op, x))
        elif isinstance(op, Route):
            y = np.concatenate([np.split(outputs[j], op.groups, axis=0)[op.group_id] for j in op.inputs], axis=0)
        elif isinstance(op, Shortcut):
            y = _activation_numpy(op.activation, x + sum(outputs[j] for j in op.inputs))
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


def _activation_numpy(name: str, x: np.ndarray) -> np.ndarray:
    """Darknet's activations in numpy (a reference for tests and for write_random_weights)."""
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


# ------------------------------------------------------------------------------------------- the model


def read_names(path: str | os.PathLike) -> list[str]:
    """Class names, one a line, as Darknet's .names files hold them (blank lines dropped, ends stripped)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise InvalidArgument(f"cannot read the names file: {error.strerror}", field="names",
                              reason="DARKNET_NAMES_READ") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def convert_darknet(cfg: CfgSource, weights: str | os.PathLike, *, names: str | os.PathLike | list[str] | None = None,
                    width: int | None = None, height: int | None = None, architecture: str | None = None):
    """Build an openvino.Model from a Darknet cfg and weights.

    names: a .names file or a list of class names; with it (and a network with [yolo]/[region] heads) the model
    carries Model API ``model_info`` rt_info. width/height override the [net] input size.
    """
    network = load_cfg(cfg, width=width, height=height)
    path = Path(weights)
    try:
        file_size = path.stat().st_size
        f = path.open("rb")
    except OSError as error:
        raise InvalidArgument(f"cannot read the weights: {error.strerror}", field="weights",
                              reason="DARKNET_WEIGHTS_READ") from None
    with f:
        header = read_weights_header(f, file_size)
        check_weights_size(network, header, file_size)
        model = build_model(network, _WeightStream(f))
    model.set_rt_info("darknet", ["conversion_parameters", "framework"])
    model.set_rt_info(header.version, ["conversion_parameters", "darknet_weights_version"])
    if names is not None and network.heads:
        labels = read_names(names) if not isinstance(names, list) else [str(n) for n in names]
        write_model_info(model, darknet_model_info(network, labels, architecture=architecture))
    return model


def build_model(network: DarknetNetwork, stream: _WeightStream):
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
        else:  # pragma: no cover - _resolve knows every op
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


def _convolution(ops, x, conv: Conv, stream: _WeightStream, i: int):
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
