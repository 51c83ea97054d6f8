"""The decoding facts of a Darknet YOLO network's heads (anchors, masks, classes, scale_x_y, labels, input
size, letterbox), as the Model API ``model_info`` values the frontend writes into the IR.

workbench_runtime.model_info holds the convention itself (keys, the writer, the typed reader every later
step uses); this module only derives the values from a parsed network.

Preprocessing follows the cfg: Darknet stretches the picture to the input (resize_type standard, as
cv2.dnn.blobFromImage(crop=False) does) unless [net] letter_box=1, where it letterboxes it (letterbox_image:
aspect kept, centred, the rest filled with 0.5) and maps the boxes back (correct_yolo_boxes): resize_type
fit_to_window_letterbox. Darknet's 0.5 is 127.5 on the 0..255 scale the input is divided by; pad_value must
be a whole number, and 128 (127.5 rounded, half up or half to even alike) and 127 are equally near (0.5/255
off 0.5), so 128 it is. It is written for every Darknet model: it is the pad Darknet uses whenever it
letterboxes, also with `-letter_box` on a cfg without letter_box=1 (an evaluation's letterbox resize mode).

model_type and architecture name the cfg's family (guess_architecture); decoding never reads them, it
follows the per-output head values (output_kinds, output_scale_x_y, output_new_coords, ...).
"""

from __future__ import annotations

import json

from workbench_runtime.errors import InvalidArgument
from workbench_runtime.model_info import DEFAULT_CONFIDENCE_THRESHOLD, DEFAULT_IOU_THRESHOLD, _join, _num
from services.converter.darknet.network import DarknetNetwork

LETTERBOX_PAD = 128  # Darknet's letterbox_image fills with 0.5: 127.5 of 255, rounded (see above)


# Full-size backbones (Darknet-53, CSPDarknet-53) have 52 convolutions and more; the tiny cfgs (yolov3-tiny,
# yolov3-tiny_3l, yolov4-tiny, yolov4-tiny-3l) 13 to 32. The head count does not tell them apart (the _3l
# cfgs have three heads).
TINY_MAX_CONVOLUTIONS = 40
# yolov4x-mish widens yolov4-csp by 1.25 (its widest convolution has 1280 filters, yolov4-csp's 1024)
SCALED_WIDE_FILTERS = 1024

# architecture -> model_type
MODEL_TYPES = {
    "yolov2": "YOLOv2",
    "yolov3": "YOLOv3",
    "yolov3-tiny": "YOLOv3-tiny",
    "yolov4": "YOLOv4",
    "yolov4-tiny": "YOLOv4-tiny",
    "yolov4-csp": "Scaled-YOLOv4",
    "yolov4x-mish": "Scaled-YOLOv4",
}


def guess_architecture(network: DarknetNetwork) -> str:
    """The cfg's family, from its heads and layers:

    - yolov2: [region] heads;
    - yolov4-csp / yolov4x-mish (Scaled-YOLOv4): [yolo] heads with new_coords=1 (outputs activated in the
      network, box sizes (2*t)^2 * anchor); yolov4x-mish when a convolution is wider than 1024 filters;
    - yolov4: mish activations or scale_x_y != 1; else yolov3;
    - "-tiny" appended to yolov3/yolov4 under TINY_MAX_CONVOLUTIONS convolutions.
    """
    heads = network.heads
    if any(head.kind == "region" for head in heads):
        return "yolov2"
    convolutions = network.convolutions
    if any(head.new_coords for head in heads):
        return "yolov4x-mish" if any(conv.filters > SCALED_WIDE_FILTERS for conv in convolutions) else "yolov4-csp"
    v4 = any(head.scale_x_y != 1.0 for head in heads) or any(conv.activation == "mish" for conv in convolutions)
    return ("yolov4" if v4 else "yolov3") + ("-tiny" if len(convolutions) < TINY_MAX_CONVOLUTIONS else "")


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
    guessed = guess_architecture(network)
    architecture = architecture or guessed
    return {
        "model_type": MODEL_TYPES.get(architecture.lower(), MODEL_TYPES[guessed]),
        "architecture": architecture,
        "labels": " ".join(label.replace(" ", "_") for label in labels),
        "label_names": json.dumps(list(labels), ensure_ascii=False),
        "anchors": _join(anchors),
        "masks": _join(masks),
        "confidence_threshold": _num(float(confidence_threshold)),
        "iou_threshold": _num(float(iou_threshold)),
        "resize_type": "fit_to_window_letterbox" if network.letter_box else "standard",
        "reverse_input_channels": "True",
        "mean_values": "0 0 0",
        "scale_values": "255 255 255",
        "pad_value": str(LETTERBOX_PAD),
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
