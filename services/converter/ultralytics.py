"""Ultralytics ONNX exports (YOLOv5u, YOLOv8, YOLO11 detectors) carry their own description in the ONNX metadata:
task, class names, image size. Written as model_info, they let every later step preprocess and decode the model
as Ultralytics does, with no configuration: letterboxed into the export's size (centred, padded with 114 grey),
RGB scaled to 0..1, boxes decoded from [1, 4+C, A] (workbench_runtime.detection.AnchorFreeDecoder).
"""

from __future__ import annotations

import ast
import functools
import json
from pathlib import Path

import openvino as ov
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from workbench_runtime.model_info import write_model_info

LETTERBOX_PAD = 114  # ultralytics.data.augment.LetterBox's fill
# Ultralytics' predict defaults: conf 0.25, iou 0.7
CONFIDENCE_THRESHOLD, IOU_THRESHOLD = 0.25, 0.7


def metadata(path: Path) -> dict[str, str]:
    """The ONNX model's metadata_props; {} when they cannot be read (the conversion has succeeded already)."""
    try:
        return {prop.key: prop.value for prop in _metadata_only().FromString(path.read_bytes()).metadata_props}
    except Exception:  # noqa: BLE001 - the description is optional
        return {}


@functools.cache
def _metadata_only():
    """ONNX's ModelProto reduced to its metadata_props (field 14): protobuf skips the graph and every other field
    unread, and the services need no onnx package for it."""
    file = descriptor_pb2.FileDescriptorProto(name="workbench/onnx_metadata.proto", package="workbench.onnx_metadata")
    entry = file.message_type.add(name="StringStringEntryProto")
    for name, number in (("key", 1), ("value", 2)):
        entry.field.add(name=name, number=number, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    model = file.message_type.add(name="ModelProto")
    model.field.add(name="metadata_props", number=14, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                    label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
                    type_name=".workbench.onnx_metadata.StringStringEntryProto")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("workbench.onnx_metadata.ModelProto"))


def detector_info(props: dict[str, str]) -> dict[str, str] | None:
    """model_info for an Ultralytics detection export; None for anything else (other tasks are not decoded yet)."""
    if props.get("author") != "Ultralytics" or props.get("task") != "detect":
        return None
    try:
        names = ast.literal_eval(props.get("names", "{}"))  # "{0: 'person', 1: 'bicycle', ...}"
        height, width = ast.literal_eval(props.get("imgsz", "[640, 640]"))
        labels = [str(names[i]) for i in sorted(names)]
    except (ValueError, SyntaxError, TypeError, KeyError):
        return None  # a damaged description: the shapes still tell the layout
    return {
        "model_type": "YOLOv8",  # the [1, 4+C, A] layout, shared by YOLOv5u, v8, v9 and 11
        "architecture": f"ultralytics-{props.get('version', '')}".rstrip("-"),
        "labels": " ".join(label.replace(" ", "_") for label in labels),
        "label_names": json.dumps(labels, ensure_ascii=False),
        "input_height": str(int(height)), "input_width": str(int(width)),
        "resize_type": "fit_to_window_letterbox", "pad_value": str(LETTERBOX_PAD),
        "reverse_input_channels": "True", "mean_values": "0 0 0", "scale_values": "255 255 255",
        "confidence_threshold": str(CONFIDENCE_THRESHOLD), "iou_threshold": str(IOU_THRESHOLD),
    }


def describe(model: ov.Model, source: Path) -> None:
    """Write an Ultralytics detector's model_info into model, and give a dynamic image input the export's size
    (the import's own input shape, applied later, still wins)."""
    info = detector_info(metadata(source))
    if info is None:
        return
    write_model_info(model, info)
    shape = model.input(0).get_partial_shape()
    if len(model.inputs) == 1 and shape.is_dynamic and shape.rank.is_static and shape.rank.get_length() == 4:
        exported = [1, shape[1].get_length() if shape[1].is_static else 3, int(info["input_height"]),
                    int(info["input_width"])]
        model.reshape({model.input(0).get_any_name(): ov.PartialShape(exported)})
