"""A parsed Darknet network: each layer's operation and output shape, its detection heads, and the
arithmetic Darknet gives them (batch-norm epsilon, leaky slope, the activations).

What services.converter.darknet.cfg makes of a .cfg; what graph.py builds into OpenVINO and the numpy
reference (services.reference_weights) runs. Plain data, no parsing and no OpenVINO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # pragma: no cover
    from services.converter.darknet.cfg import Section

# AlexeyAB darknet (which YOLOv4 comes from) folds batch norm with scale / sqrt(var + .00001) in
# fuse_conv_batchnorm, as normalize_cpu does; OpenCV's importer uses 1e-6 instead.
BN_EPSILON = 1e-5
LEAKY_SLOPE = 0.1

# Darknet activation names this frontend builds (silu is accepted as another name for swish).
ACTIVATIONS = ("linear", "leaky", "relu", "relu6", "logistic", "tanh", "mish", "swish", "silu", "hard_mish", "elu")

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
    section: Section  # the cfg section it came from (for messages)
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
    # [net] letter_box=1: Darknet letterboxes the picture into the input (aspect kept, centred, grey pad) and
    # maps the boxes back through it, instead of stretching it to the input size
    letter_box: bool = False

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
