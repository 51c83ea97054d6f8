"""The Darknet .cfg: parsed the way Darknet reads it and checked layer by layer into a DarknetNetwork.

Layers: [net]/[network], [convolutional] (groups; stride; Darknet's pad/padding rule), [route] (layers,
groups/group_id), [shortcut], [maxpool] (Darknet's padding: size-1 in all, the smaller half first),
[upsample], [dropout] (identity at inference), and the heads [yolo] and [region]. Every reference, size
and channel count is checked here, so a bad cfg fails naming its layer and line, never later in OpenVINO.

Domain code: failures raise workbench_runtime.errors.InvalidArgument, never gRPC errors.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from workbench_runtime.errors import InvalidArgument
from services.converter.darknet.network import (
    ACTIVATIONS, Conv, DarknetNetwork, Head, Identity, Layer, MaxPool, Op, Route, Shape, Shortcut, Upsample,
)

# Sanity limits of a cfg: an absurd size (width=1000000, an upsample by 100000) would build a model
# that no device can run, and every later step would fail far from the cause.
MAX_INPUT_SIDE = 16384
MAX_TENSOR_VALUES = 2**31 - 1  # per layer output, C*H*W

CfgSource = Union[str, os.PathLike, DarknetNetwork]  # a cfg path, or a network already parsed

_NET_SECTIONS = ("net", "network")
_LAYER_TYPES = ("convolutional", "conv", "route", "shortcut", "maxpool", "max", "upsample", "dropout", "yolo", "region")
_CONV_UNSUPPORTED = ("xnor", "binary", "antialiasing", "deform", "share_index", "assisted_excitation")


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


def parse_cfg(text: str, *, width: int | None = None, height: int | None = None) -> DarknetNetwork:
    """Parse and check cfg text; width/height override the [net] input size."""
    sections = parse_sections(text)
    net = sections[0]
    w = width if width is not None else net.integer("width", minimum=1)
    h = height if height is not None else net.integer("height", minimum=1)
    c = net.integer("channels", 3, minimum=1)
    letter_box = bool(net.integer("letter_box", 0))
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
    return DarknetNetwork(w, h, c, tuple(layers), tuple(heads), letter_box)


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
