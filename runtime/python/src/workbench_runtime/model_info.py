"""The OpenVINO Model API `model_info` rt_info of a model, and a typed reader for YOLO detectors.

Every value is a string, lists space-separated, as the Model API writes and reads them
(``model.set_rt_info(value, ["model_info", key])``), so they survive save_model/read_model.
The converter writes it (services.converter.darknet.yolo_info for Darknet); every later step reads it here,
so preprocessing and decoding need no user configuration.

Model API keys: model_type (the cfg's family: "YOLOv2", "YOLOv3", "YOLOv3-tiny", "YOLOv4", "YOLOv4-tiny",
"Scaled-YOLOv4"; nothing here decodes by it, decoding follows the per-output keys below. Only "YOLOv4" is
a Model API wrapper's name: its YoloV4 decodes YOLOv3 heads too, so Model API users of those pass
model_type="YOLOv4" themselves, but neither [region] nor new_coords heads), labels (spaces in a name
become "_", as OTX writes them), anchors, masks (the outputs' masks one after another, largest grid
first, the order Model API's YoloV4 sorts its outputs in), confidence_threshold, iou_threshold,
resize_type, reverse_input_channels, mean_values, scale_values, pad_value. The model's input is RGB scaled
to 0..1 and nothing is embedded, so a BGR 0..255 picture needs reverse_input_channels=True, mean 0 and
scale 255.

Keys of our own, which Model API ignores: architecture ("yolov3", "yolov3-tiny", "yolov4", "yolov4-tiny",
"yolov4-csp", "yolov4x-mish", "yolov2"), label_names (a JSON list, exact names), input_width,
input_height, and per output, in the masks' order: output_names, output_kinds ("yolo" or "region"),
output_classes, output_anchor_counts (how many of masks each output takes), output_scale_x_y,
output_new_coords, output_coords, output_softmax.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from workbench_runtime.errors import InvalidArgument

RT_INFO_ROOT = "model_info"
DEFAULT_CONFIDENCE_THRESHOLD = 0.25  # Darknet's detector default
DEFAULT_IOU_THRESHOLD = 0.45  # Darknet's NMS default


@dataclass(frozen=True)
class YoloOutput:
    """One raw head output and what decoding it takes."""

    name: str
    kind: str  # "yolo" | "region"
    classes: int
    mask: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]  # the masked anchors, (w, h): input pixels for yolo, grid cells for region
    scale_x_y: float
    new_coords: bool
    coords: int
    softmax: bool


@dataclass(frozen=True)
class YoloModelInfo:
    model_type: str
    architecture: str
    labels: tuple[str, ...]
    input_width: int
    input_height: int
    anchors: tuple[float, ...]
    masks: tuple[int, ...]
    outputs: tuple[YoloOutput, ...]  # largest grid first, the order of masks
    confidence_threshold: float
    iou_threshold: float
    resize_type: str
    reverse_input_channels: bool
    mean_values: tuple[float, ...]
    scale_values: tuple[float, ...]
    pad_value: int


def _join(values) -> str:
    return " ".join(_num(v) for v in values)


def _num(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def write_model_info(model, info: Mapping[str, str]) -> None:
    for key, value in info.items():
        model.set_rt_info(str(value), [RT_INFO_ROOT, key])


def model_info_strings(model) -> dict[str, str]:
    """The raw model_info values of an openvino.Model ({} when it has none)."""
    if not model.has_rt_info([RT_INFO_ROOT]):
        return {}
    keys = model.get_rt_info([RT_INFO_ROOT]).value
    return {key: model.get_rt_info([RT_INFO_ROOT, key]).astype(str) for key in keys}


def read_model_info(model) -> YoloModelInfo:
    """Typed YOLO model_info of an openvino.Model (or a mapping of its strings)."""
    values = dict(model) if isinstance(model, Mapping) else model_info_strings(model)
    if not values:
        raise InvalidArgument("the model carries no model_info", field="model", reason="MODEL_INFO_MISSING")
    return parse_model_info(values)


def parse_model_info(values: Mapping[str, str]) -> YoloModelInfo:
    def get(key: str) -> str:
        if key not in values:
            raise InvalidArgument(f"model_info has no {key!r}", field="model", reason="MODEL_INFO_INVALID")
        return values[key]

    def numbers(key: str, kind=float) -> tuple:
        try:
            return tuple(kind(v) for v in get(key).split())
        except ValueError:
            raise InvalidArgument(f"model_info {key}={values[key]!r} is not a list of numbers", field="model",
                                  reason="MODEL_INFO_INVALID") from None

    def number(key: str, kind=float):
        found = numbers(key, kind)
        if len(found) != 1:
            raise InvalidArgument(f"model_info {key}={values[key]!r} is not one number", field="model",
                                  reason="MODEL_INFO_INVALID")
        return found[0]

    names = get("output_names").split()
    per_output = {
        "output_kinds": get("output_kinds").split(),
        "output_classes": numbers("output_classes", int),
        "output_anchor_counts": numbers("output_anchor_counts", int),
        "output_scale_x_y": numbers("output_scale_x_y"),
        "output_new_coords": numbers("output_new_coords", int),
        "output_coords": numbers("output_coords", int),
        "output_softmax": numbers("output_softmax", int),
    }
    for key, listed in per_output.items():
        if len(listed) != len(names):
            raise InvalidArgument(f"model_info {key} has {len(listed)} values for {len(names)} outputs",
                                  field="model", reason="MODEL_INFO_INVALID")
    anchors = numbers("anchors")
    masks = numbers("masks", int)
    if sum(per_output["output_anchor_counts"]) != len(masks):
        raise InvalidArgument("model_info masks do not add up to output_anchor_counts", field="model",
                              reason="MODEL_INFO_INVALID")
    if any(not 0 <= m < len(anchors) // 2 for m in masks):
        raise InvalidArgument("model_info masks point past anchors", field="model", reason="MODEL_INFO_INVALID")
    outputs, start = [], 0
    for i, name in enumerate(names):
        count = per_output["output_anchor_counts"][i]
        mask = masks[start:start + count]
        start += count
        outputs.append(YoloOutput(
            name=name,
            kind=per_output["output_kinds"][i],
            classes=per_output["output_classes"][i],
            mask=mask,
            anchors=tuple((anchors[2 * m], anchors[2 * m + 1]) for m in mask),
            scale_x_y=per_output["output_scale_x_y"][i],
            new_coords=bool(per_output["output_new_coords"][i]),
            coords=per_output["output_coords"][i],
            softmax=bool(per_output["output_softmax"][i]),
        ))
    if "label_names" in values:
        try:
            labels = tuple(str(v) for v in json.loads(values["label_names"]))
        except (ValueError, TypeError):
            raise InvalidArgument("model_info label_names is not a JSON list", field="model",
                                  reason="MODEL_INFO_INVALID") from None
    else:
        labels = tuple(values.get("labels", "").split())
    return YoloModelInfo(
        model_type=get("model_type"),
        architecture=values.get("architecture", ""),
        labels=labels,
        input_width=number("input_width", int),
        input_height=number("input_height", int),
        anchors=anchors,
        masks=masks,
        outputs=tuple(outputs),
        confidence_threshold=number("confidence_threshold"),
        iou_threshold=number("iou_threshold"),
        resize_type=values.get("resize_type", "standard"),
        reverse_input_channels=values.get("reverse_input_channels", "False") in ("True", "YES"),
        mean_values=numbers("mean_values") if "mean_values" in values else (),
        scale_values=numbers("scale_values") if "scale_values" in values else (),
        pad_value=number("pad_value", int) if "pad_value" in values else 0,
    )
