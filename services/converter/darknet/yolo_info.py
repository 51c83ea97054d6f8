"""The decoding facts of a Darknet YOLO network's heads (anchors, masks, classes, scale_x_y, labels, input
size), as the Model API ``model_info`` values the frontend writes into the IR.

workbench_runtime.model_info holds the convention itself (keys, the writer, the typed reader every later
step uses); this module only derives the values from a parsed network.
"""

from __future__ import annotations

import json

from workbench_runtime.errors import InvalidArgument
from workbench_runtime.model_info import DEFAULT_CONFIDENCE_THRESHOLD, DEFAULT_IOU_THRESHOLD, _join, _num
from services.converter.darknet.network import Conv, DarknetNetwork


def guess_architecture(network: DarknetNetwork) -> str:
    """yolov2 for [region] heads; else yolov3/yolov4 (mish or scale_x_y mark v4), -tiny under three heads."""
    heads = network.heads
    if any(head.kind == "region" for head in heads):
        return "yolov2"
    v4 = any(head.scale_x_y != 1.0 for head in heads) or any(
        isinstance(layer.op, Conv) and layer.op.activation == "mish" for layer in network.layers)
    return ("yolov4" if v4 else "yolov3") + ("-tiny" if len(heads) < 3 else "")


def darknet_model_info(network: DarknetNetwork, labels: list[str], *, architecture: str | None = None,
                       confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
                       iou_threshold: float = DEFAULT_IOU_THRESHOLD) -> dict[str, str]:
    """The model_info values (all strings) for a Darknet network with [yolo]/[region] heads."""
    heads = sorted(network.heads, key=lambda h: (-h.grid[0] * h.grid[1], h.layer))
    if not heads:
        raise InvalidArgument("the cfg has no [yolo] or [region] layer, so it is not a YOLO detector",
                              field="cfg", reason="DARKNET_NOT_YOLO")
    classes = {head.classes for head in heads}
    if len(labels) not in classes:
        raise InvalidArgument(
            f"the names file lists {len(labels)} classes but the cfg's heads have classes={sorted(classes)}",
            field="names", reason="DARKNET_NAMES_COUNT")
    if all(head.anchors == heads[0].anchors for head in heads):
        anchors = list(heads[0].anchors)
        masks = [m for head in heads for m in head.mask]
    else:  # heads with anchor lists of their own: list each head's anchors, masks number them in turn
        anchors = [v for head in heads for pair in head.masked_anchors for v in pair]
        masks = list(range(sum(len(head.mask) for head in heads)))
    return {
        "model_type": "YOLOv4" if all(head.kind == "yolo" for head in heads) else "YOLOv2",
        "architecture": architecture or guess_architecture(network),
        "labels": " ".join(label.replace(" ", "_") for label in labels),
        "label_names": json.dumps(list(labels), ensure_ascii=False),
        "anchors": _join(anchors),
        "masks": _join(masks),
        "confidence_threshold": _num(float(confidence_threshold)),
        "iou_threshold": _num(float(iou_threshold)),
        "resize_type": "standard",  # Darknet and cv2.dnn.blobFromImage(crop=False) stretch, no letterbox
        "reverse_input_channels": "True",
        "mean_values": "0 0 0",
        "scale_values": "255 255 255",
        "pad_value": "0",
        "input_width": str(network.width),
        "input_height": str(network.height),
        "output_names": " ".join(head.output for head in heads),
        "output_kinds": " ".join(head.kind for head in heads),
        "output_classes": _join(head.classes for head in heads),
        "output_anchor_counts": _join(len(head.mask) for head in heads),
        "output_scale_x_y": _join(head.scale_x_y for head in heads),
        "output_new_coords": _join(head.new_coords for head in heads),
        "output_coords": _join(head.coords for head in heads),
        "output_softmax": _join(head.softmax for head in heads),
    }
