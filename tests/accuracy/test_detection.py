"""Decoding detector outputs: the YOLO formulas by hand, NMS, the other formats, and agreement with OpenCV 4.

The OpenCV oracle is OpenCV 4's cv2.dnn_DetectionModel on the same Darknet cfg and weights (OpenCV 5 has no
Darknet reader; see tests/opencv4.py), run in a subprocess. DetectionModel keeps each box's best class only
(our multi_label=False) and hands back integer boxes: centre, width and height truncated to int, left =
centre_x - width / 2 in integer arithmetic, clipped to the frame. Our float boxes, put through the same
integer arithmetic, must give the same rectangles; the float boxes themselves differ from OpenCV's by that
truncation only (under 2.5 pixels a side).
"""

from __future__ import annotations

import json
import logging
import math
import re
import textwrap
import warnings
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from services import reference_models
from workbench_runtime.detection import (BoxesDecoder, DecodeSettings, DetectionOutputDecoder, Decoder, Detections,
                                       YoloDecoder, iou_matrix, nms)
from workbench_runtime.errors import FailedPrecondition
from workbench_runtime.model_info import YoloOutput
from workbench_runtime.preprocess import Preprocessing, Transform
from services.converter.darknet import convert_darknet
from services.converter.darknet.cfg import load_cfg
from tests.opencv4 import run_opencv4
from workbench_runtime.model_info import model_info_strings

REPO = Path(__file__).resolve().parents[2]
IDENTITY = Transform(1.0, 1.0, 0.0, 0.0)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def head(kind="yolo", *, classes=2, anchors=((10.0, 14.0), (23.0, 27.0)), scale_x_y=1.0, new_coords=False,
         softmax=False, name="out") -> YoloOutput:
    return YoloOutput(name=name, kind=kind, classes=classes, mask=tuple(range(len(anchors))), anchors=anchors,
                      scale_x_y=scale_x_y, new_coords=new_coords, coords=4, softmax=softmax)


def raw_map(h: YoloOutput, grid=(2, 3), fill=-20.0) -> np.ndarray:
    """A [1, A*(5+C), H, W] head map whose objectness is off everywhere."""
    return np.full((1, len(h.anchors) * (5 + h.classes), *grid), fill, np.float32)


def put(raw, h, anchor, y, x, values):
    per = 5 + h.classes
    raw[0, anchor * per:(anchor + 1) * per, y, x] = values


# ------------------------------------------------------------------------------------------ the formulas


def test_yolo_box_formula_with_scale_x_y():
    h = head(scale_x_y=1.1)
    raw = raw_map(h)
    tx, ty, tw, th, obj, c0, c1 = 0.3, -0.4, 0.5, -0.2, 2.0, 1.5, -3.0
    put(raw, h, 1, 1, 2, [tx, ty, tw, th, obj, c0, c1])
    decoder = YoloDecoder([h], 96, 64, DecodeSettings(confidence_threshold=0.25))
    found = decoder({"out": raw}, IDENTITY)
    # Darknet: x = (sigmoid(tx) * s - (s - 1) / 2 + cell_x) / grid_w, w = exp(tw) * anchor_w / input_w
    cx = (sigmoid(tx) * 1.1 - 0.05 + 2) / 3 * 96
    cy = (sigmoid(ty) * 1.1 - 0.05 + 1) / 2 * 64
    w, h_ = math.exp(tw) * 23.0, math.exp(th) * 27.0
    assert found.labels.tolist() == [0]
    assert found.scores[0] == pytest.approx(sigmoid(obj) * sigmoid(c0), rel=1e-6)
    assert found.boxes[0] == pytest.approx([cx - w / 2, cy - h_ / 2, cx + w / 2, cy + h_ / 2], rel=1e-5)


def test_new_coords_heads_are_not_activated_again():
    h = head(scale_x_y=2.0, new_coords=True)
    raw = raw_map(h, fill=0.0)
    put(raw, h, 0, 0, 1, [0.6, 0.25, 0.7, 0.4, 0.9, 0.8, 0.1])
    found = YoloDecoder([h], 96, 64, DecodeSettings(confidence_threshold=0.5))({"out": raw}, IDENTITY)
    cx, cy = (0.6 * 2 - 0.5 + 1) / 3 * 96, (0.25 * 2 - 0.5 + 0) / 2 * 64
    w, h_ = 0.7 ** 2 * 4 * 10.0, 0.4 ** 2 * 4 * 14.0
    assert found.scores.tolist() == pytest.approx([0.9 * 0.8])
    assert found.boxes[0] == pytest.approx([cx - w / 2, cy - h_ / 2, cx + w / 2, cy + h_ / 2], rel=1e-5)


def test_region_heads_use_grid_anchors_and_softmax():
    h = head("region", softmax=True, anchors=((1.5, 2.0),))
    raw = raw_map(h)
    put(raw, h, 0, 1, 0, [0.1, 0.2, 0.3, 0.4, 3.0, 2.0, 1.0])
    found = YoloDecoder([h], 96, 64, DecodeSettings(confidence_threshold=0.3))({"out": raw}, IDENTITY)
    p0 = math.exp(2.0) / (math.exp(2.0) + math.exp(1.0))
    cx, cy = (0 + sigmoid(0.1)) / 3 * 96, (1 + sigmoid(0.2)) / 2 * 64
    w, h_ = math.exp(0.3) * 1.5 / 3 * 96, math.exp(0.4) * 2.0 / 2 * 64
    assert found.labels.tolist() == [0]
    assert found.scores[0] == pytest.approx(sigmoid(3.0) * p0, rel=1e-6)
    assert found.boxes[0] == pytest.approx([cx - w / 2, cy - h_ / 2, cx + w / 2, cy + h_ / 2], rel=1e-5)


def test_multi_label_keeps_every_class_above_the_threshold():
    h = head()
    raw = raw_map(h)
    put(raw, h, 0, 0, 0, [0, 0, 0, 0, 5.0, 2.0, 1.0])  # both classes well above 0.5
    multi = YoloDecoder([h], 96, 64, DecodeSettings(confidence_threshold=0.5))({"out": raw}, IDENTITY)
    best = YoloDecoder([h], 96, 64, DecodeSettings(confidence_threshold=0.5, multi_label=False))({"out": raw},
                                                                                               IDENTITY)
    assert multi.labels.tolist() == [0, 1] and np.all(np.diff(multi.scores) <= 0)
    assert np.array_equal(multi.boxes[0], multi.boxes[1])
    assert best.labels.tolist() == [0]


def test_threshold_nms_cap_and_transform():
    h = head(classes=2, anchors=((20.0, 20.0),))
    raw = raw_map(h, grid=(4, 4))
    for x, obj in ((0, 3.0), (1, 2.0), (3, 1.0)):  # neighbouring cells 0 and 1 overlap heavily once widened
        put(raw, h, 0, 2, x, [0, 0, 1.0, 1.0, obj, 4.0, -4.0])
    settings = DecodeSettings(confidence_threshold=0.5, iou_threshold=0.45)
    found = YoloDecoder([h], 64, 64, settings)({"out": raw}, IDENTITY)
    assert len(found) == 2  # cell 1 suppressed by cell 0, cell 3 kept
    capped = YoloDecoder([h], 64, 64, DecodeSettings(0.5, 0.45, max_detections=1))({"out": raw}, IDENTITY)
    assert capped.scores.tolist() == [found.scores[0]]
    strict = YoloDecoder([h], 64, 64, DecodeSettings(0.8))({"out": raw}, IDENTITY)
    assert len(strict) == 1 and strict.scores[0] > 0.8
    # the letterbox transform is undone and boxes are clipped to the image
    transform = Transform(0.5, 0.5, 0.0, 8.0)
    mapped = YoloDecoder([h], 64, 64, settings)({"out": raw}, transform, image_size=(120, 90))
    expected = (found.boxes - [0, 8, 0, 8]) / 0.5
    expected[:, 0::2] = np.clip(expected[:, 0::2], 0, 120)
    expected[:, 1::2] = np.clip(expected[:, 1::2], 0, 90)
    assert mapped.boxes == pytest.approx(expected, abs=1e-4)


def reference_nms(boxes, scores, labels, threshold):
    order = np.argsort(-scores, kind="stable")
    kept = []
    for i in order:
        if all(labels[k] != labels[i] or iou_matrix(boxes[i:i + 1], boxes[k:k + 1])[0, 0] <= threshold
               for k in kept):
            kept.append(i)
    return kept


def test_nms_is_per_class_greedy_nms():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-50, 300, (300, 2))  # some boxes at negative coordinates
    boxes = np.concatenate([xy, xy + rng.uniform(10, 80, (300, 2))], axis=1)
    scores = rng.random(300).astype(np.float32)
    labels = rng.integers(0, 4, 300)
    for threshold in (0.3, 0.45, 0.7):
        assert nms(boxes, scores, labels, threshold).tolist() == reference_nms(boxes, scores, labels, threshold)
    assert nms(boxes, scores, labels, 0.45, max_detections=7).tolist() == reference_nms(boxes, scores, labels, 0.45)[:7]
    # the cap counts boxes kept, not candidates: three stacked boxes and one apart, cap 2
    stacked = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5], [0, 0, 10.5, 10], [50, 50, 60, 60]], np.float64)
    assert nms(stacked, np.float32([0.9, 0.8, 0.7, 0.6]), [0, 0, 0, 0], 0.5, max_detections=2).tolist() == [0, 3]
    # IoU exactly at the threshold does not suppress (Darknet and OpenCV suppress above it)
    pair = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float64)
    assert nms(pair, np.float32([0.9, 0.8]), [0, 0], 0.5).tolist() == [0, 1]
    assert nms(pair, np.float32([0.9, 0.8]), [0, 0], 0.49).tolist() == [0]
    assert nms(pair, np.float32([0.9, 0.8]), [0, 1], 0.1).tolist() == [0, 1]
    assert nms(pair, np.float32([0.0, -1.0]), [0, 0], 0.49).tolist() == [0]  # scores not above 0 work too


def test_detection_output_and_box_decoders():
    rows = np.zeros((1, 1, 5, 7), np.float32)
    rows[0, 0, 0] = [0, 3, 0.9, 0.1, 0.2, 0.5, 0.6]
    rows[0, 0, 1] = [0, 1, 0.1, 0.1, 0.2, 0.5, 0.6]  # under the threshold
    rows[0, 0, 2] = [-1, 0, 0, 0, 0, 0, 0]  # padding from here on
    rows[0, 0, 3] = [0, 2, 0.99, 0, 0, 1, 1]
    found = DetectionOutputDecoder("det", 200, 100, DecodeSettings(0.3))({"det": rows}, Transform(2.0, 2.0, 0, 0))
    assert found.labels.tolist() == [3] and found.scores.tolist() == pytest.approx([0.9])
    assert found.boxes[0] == pytest.approx([10, 10, 50, 30])
    plain = np.array([[10, 20, 30, 40, 0.8, 2], [0, 0, 5, 5, 0.1, 1], [1, 1, 9, 9, 0.95, 0]], np.float32)
    found = BoxesDecoder("boxes", DecodeSettings(0.3))({"boxes": plain[None]}, IDENTITY)
    assert found.labels.tolist() == [0, 2] and found.boxes[1].tolist() == [10, 20, 30, 40]
    batched = np.concatenate([np.array([[0], [0], [1]], np.float32), plain], axis=1)
    found = BoxesDecoder("boxes", DecodeSettings(0.05), batch_index=True)({"boxes": batched}, IDENTITY)
    assert found.labels.tolist() == [2, 1]


# ------------------------------------------------------------------------------------ non-finite outputs


@pytest.mark.parametrize("multi_label", [True, False])
def test_non_finite_predictions_are_dropped_and_counted(multi_label, caplog):
    h = head(anchors=((10.0, 14.0), (23.0, 27.0)))
    raw = raw_map(h, grid=(4, 4))
    put(raw, h, 0, 2, 1, [0.1, 0.2, 0.3, 0.4, 4.0, 3.0, -3.0])  # the one sound prediction
    put(raw, h, 1, 0, 0, [0.1, 0.2, 1e4, 0.4, 4.0, 3.0, -3.0])  # exp(tw) overflows: an infinitely wide box
    put(raw, h, 0, 1, 1, [np.nan, 0.2, 0.3, 0.4, 4.0, 3.0, -3.0])  # NaN centre
    put(raw, h, 1, 2, 2, [0.1, 0.2, 0.3, 0.4, 4.0, np.nan, -3.0])  # NaN class score
    put(raw, h, 0, 3, 3, [0.1, 0.2, 0.3, 0.4, np.nan, 3.0, -3.0])  # NaN objectness
    put(raw, h, 1, 3, 0, [0.1, 0.2, -1e4, 0.4, 4.0, 3.0, -3.0])  # exp(tw) underflows: width 0, still finite
    decoder = YoloDecoder([h], 64, 64, DecodeSettings(confidence_threshold=0.5, multi_label=multi_label))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow or invalid-value warnings either
        with caplog.at_level(logging.WARNING, logger="workbench_runtime.detection"):
            found = decoder({"out": raw}, Transform(0.5, 0.5, 3.0, 5.0), image_size=(200, 150))
    assert np.isfinite(found.boxes).all() and np.isfinite(found.scores).all()
    assert len(found) == 2 and found.labels.tolist() == [0, 0]
    widths = sorted((found.boxes[:, 2] - found.boxes[:, 0]).tolist())
    assert widths[0] == 0 and widths[1] == pytest.approx(math.exp(0.3) * 10.0 / 0.5, rel=1e-5)
    assert decoder.nonfinite_dropped == 4
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "decoding dropped 4 predictions with a non-finite value (NaN or infinite objectness, box or score): "
        "the model's outputs overflow"]
    decoder({"out": raw}, IDENTITY)
    assert decoder.nonfinite_dropped == 8  # counted over the decoder's calls


def test_activated_heads_drop_infinite_objectness():
    h = head(scale_x_y=2.0, new_coords=True)
    raw = raw_map(h, fill=0.0)
    put(raw, h, 0, 0, 1, [0.6, 0.25, 0.7, 0.4, 0.9, 0.8, 0.1])
    put(raw, h, 1, 1, 2, [0.6, 0.25, 0.7, 0.4, np.inf, 0.8, 0.1])  # passes any threshold, scores inf
    put(raw, h, 1, 0, 0, [0.6, 0.25, 3e19, 0.4, 0.9, 0.8, 0.1])  # tw^2 overflows float32
    decoder = YoloDecoder([h], 96, 64, DecodeSettings(confidence_threshold=0.5))
    found = decoder({"out": raw}, IDENTITY)
    assert found.scores.tolist() == pytest.approx([0.9 * 0.8]) and np.isfinite(found.boxes).all()
    assert decoder.nonfinite_dropped == 2


def test_other_formats_drop_non_finite_rows():
    rows = np.zeros((1, 1, 4, 7), np.float32)
    rows[0, 0, 0] = [0, 3, 0.9, 0.1, 0.2, 0.5, 0.6]
    rows[0, 0, 1] = [0, 1, 0.8, np.nan, 0.2, 0.5, 0.6]
    rows[0, 0, 2] = [0, 1, np.inf, 0.1, 0.2, 0.5, 0.6]
    rows[0, 0, 3] = [-1, 0, 0, 0, 0, 0, 0]
    decoder = DetectionOutputDecoder("det", 200, 100, DecodeSettings(0.3))
    found = decoder({"det": rows}, IDENTITY)
    assert found.labels.tolist() == [3] and decoder.nonfinite_dropped == 2
    plain = np.array([[10, 20, 30, 40, 0.8, 2], [0, 0, np.inf, 5, 0.9, 1], [1, 1, 9, 9, np.nan, 0]], np.float32)
    decoder = BoxesDecoder("boxes", DecodeSettings(0.3))
    found = decoder({"boxes": plain}, IDENTITY)
    assert found.labels.tolist() == [2] and decoder.nonfinite_dropped == 2


def toy_model(output_shape, *, input_shape=(1, 3, 32, 32), name="out") -> ov.Model:
    image = ops.parameter(list(input_shape), np.float32, name="image")
    mean = ops.reduce_mean(image, np.array(list(range(1, len(input_shape))), np.int64), keep_dims=False)
    out = ops.add(ops.reshape(mean, np.array([1] * len(output_shape), np.int64), False),
                  ops.constant(np.zeros(output_shape, np.float32)))
    out.output(0).get_tensor().set_names({name})
    return ov.Model([ops.result(out)], [image], "toy")


def test_from_model_picks_the_format():
    assert isinstance(Decoder.from_model(toy_model([1, 1, 100, 7])), DetectionOutputDecoder)
    boxes = Decoder.from_model(toy_model([1, 50, 6]), confidence_threshold=0.1)
    assert isinstance(boxes, BoxesDecoder) and not boxes.batch_index and boxes.settings.confidence_threshold == 0.1
    assert Decoder.from_model(toy_model([50, 7])).batch_index
    with pytest.raises(FailedPrecondition, match=r"the model's output \[1,1000\] is a classification output, "
                                                 r"not detections"):
        Decoder.from_model(toy_model([1, 1000]))
    with pytest.raises(FailedPrecondition, match="classification"):
        Decoder.from_model(toy_model([1, 1000, 1, 1]))
    with pytest.raises(FailedPrecondition, match="no detection format"):
        Decoder.from_model(toy_model([1, 3, 8, 8]))


@pytest.fixture(scope="module")
def tiny() -> ov.Model:
    files = reference_models.yolov4_tiny()
    return convert_darknet(files.cfg, files.weights, names=files.names)


def test_from_model_reads_yolo_model_info(tiny):
    decoder = Decoder.from_model(tiny)
    assert isinstance(decoder, YoloDecoder)
    assert decoder.output_names == ("yolo_37", "yolo_30")  # the 26x26 head first, as model_info lists them
    assert [h.anchors for h in decoder.heads] == [((23, 27), (37, 58), (81, 82)), ((81, 82), (135, 169), (344, 319))]
    assert decoder.settings == DecodeSettings(0.25, 0.45, 100, True)
    assert (decoder.input_width, decoder.input_height) == (416, 416)


def test_decoding_does_not_depend_on_the_model_type(tiny):
    compiled = ov.Core().compile_model(tiny, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    image = cv2.imread(str(REPO / "data" / "images" / "person.jpg"))
    tensor, transform = Preprocessing.from_model(tiny)(image)
    outputs = {port.get_any_name(): value for port, value in compiled(tensor[None]).items()}
    expected = Decoder.from_model(tiny, confidence_threshold=0.05)(outputs, transform)
    assert len(expected) > 0
    for model_type in ("YOLOv3", "YOLOv3-tiny", "YOLOv4", "Scaled-YOLOv4", "YOLOv2", "something else"):
        renamed = tiny.clone()
        renamed.set_rt_info(model_type, ["model_info", "model_type"])
        assert Decoder.from_model(renamed, confidence_threshold=0.05)(outputs, transform) == expected


# ------------------------------------------------------------------------------------ against OpenCV 4

ORACLE = textwrap.dedent('''
    import json, sys
    import cv2, numpy as np
    req = json.load(open(sys.argv[1]))
    model = cv2.dnn_DetectionModel(cv2.dnn.readNetFromDarknet(req["cfg"], req["weights"]))
    model.setInputParams(scale=1 / 255.0, size=(416, 416), swapRB=True)
    out = {}
    for path in req["images"]:
        classes, scores, boxes = model.detect(cv2.imread(path), confThreshold=req["conf"], nmsThreshold=req["nms"])
        out[path] = [[int(c), float(s), *map(float, b)] for c, s, b in zip(
            np.array(classes).reshape(-1), np.array(scores).reshape(-1), np.array(boxes).reshape(-1, 4))]
    json.dump(out, open(req["out"], "w"))
''')
LOW, HIGH = 0.2, 0.3  # a detection >= HIGH on one side must be found >= LOW on the other


def opencv_integer_boxes(found: Detections, width: int, height: int) -> np.ndarray:
    """Our boxes through DetectionModel's integer arithmetic (opencv/modules/dnn/src/model.cpp)."""
    cx = ((found.boxes[:, 0] + found.boxes[:, 2]) / 2).astype(np.int64)
    cy = ((found.boxes[:, 1] + found.boxes[:, 3]) / 2).astype(np.int64)
    w = (found.boxes[:, 2] - found.boxes[:, 0]).astype(np.int64)
    h = (found.boxes[:, 3] - found.boxes[:, 1]).astype(np.int64)
    left, top = np.clip(cx - w // 2, 0, width - 1), np.clip(cy - h // 2, 0, height - 1)
    w, h = np.maximum(1, np.minimum(w, width - left)), np.maximum(1, np.minimum(h, height - top))
    return np.stack([left, top, left + w, top + h], axis=1).astype(np.float64)


def test_yolov4_tiny_detections_agree_with_opencv_detection_model(tiny, tmp_path):
    files = reference_models.yolov4_tiny()
    images = sorted((REPO / "data" / "images").glob("*.jpg")) + sorted((REPO / "data" / "vtest").glob("*.jpg"))
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"cfg": str(files.cfg), "weights": str(files.weights), "conf": LOW, "nms": 0.45,
                                   "images": [str(p) for p in images], "out": str(tmp_path / "out.json")}))
    (tmp_path / "oracle.py").write_text(ORACLE)
    run_opencv4(tmp_path / "oracle.py", str(request))
    theirs = json.loads((tmp_path / "out.json").read_text())

    decoder = Decoder.from_model(tiny, confidence_threshold=LOW, iou_threshold=0.45, max_detections=0,
                                 multi_label=False)
    preprocessing = Preprocessing.from_model(tiny)
    compiled = ov.Core().compile_model(tiny, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    pairs, worst_iou, worst_raw_iou, worst_px, worst_score = 0, 1.0, 1.0, 0.0, 0.0
    counts = {"ours": 0, "opencv": 0}
    for path in images:
        image = cv2.imread(str(path))
        tensor, transform = preprocessing(image)
        outputs = {port.get_any_name(): value for port, value in compiled(tensor[None]).items()}
        ours = decoder(outputs, transform)
        rows = np.asarray(theirs[str(path)], np.float64).reshape(-1, 6)
        cv_boxes = rows[:, 2:6].copy()
        cv_boxes[:, 2:] += cv_boxes[:, :2]
        counts["ours"] += int((ours.scores >= 0.25).sum())
        counts["opencv"] += int((rows[:, 1] >= 0.25).sum())
        integer = opencv_integer_boxes(ours, image.shape[1], image.shape[0])
        ious = iou_matrix(integer, cv_boxes)
        raw_ious = iou_matrix(ours.boxes, cv_boxes)
        for i in np.nonzero(ours.scores >= HIGH)[0]:  # ours found by OpenCV
            same = (rows[:, 0] == ours.labels[i]) & (rows[:, 1] >= LOW)
            assert same.any(), f"{path.name}: OpenCV lacks our {ours.labels[i]} at {ours.scores[i]:.3f}"
            j = np.nonzero(same)[0][np.argmax(ious[i, same])]
            pairs += 1
            worst_iou = min(worst_iou, ious[i, j])
            worst_raw_iou = min(worst_raw_iou, raw_ious[i, j])
            worst_px = max(worst_px, float(np.abs(ours.boxes[i] - cv_boxes[j]).max()))
            worst_score = max(worst_score, abs(float(ours.scores[i]) - rows[j, 1]))
        for j in np.nonzero(rows[:, 1] >= HIGH)[0]:  # OpenCV's found by us
            same = (ours.labels == rows[j, 0]) & (ours.scores >= LOW)
            assert same.any(), f"{path.name}: we lack OpenCV's {int(rows[j, 0])} at {rows[j, 1]:.3f}"
            assert ious[same, j].max() >= 0.9
    print(f"OpenCV agreement: {pairs} pairs (>= {HIGH}), at 0.25 ours {counts['ours']} / OpenCV "
          f"{counts['opencv']}; min IoU {worst_iou:.4f} with OpenCV's integer boxes, {worst_raw_iou:.4f} raw; "
          f"max edge shift {worst_px:.2f} px; max score difference {worst_score:.2e}")
    assert pairs >= 40
    assert counts["ours"] == counts["opencv"]
    assert worst_iou >= 0.9 and worst_iou > 0.99  # in practice the same integer rectangles
    assert worst_px < 2.5  # OpenCV's truncation to integers, nothing more
    assert worst_score < 2e-3


# ------------------------------------------------------------------------- letterboxed Darknet models
# [net] letter_box=1: the test's own letterbox and box mapping, written from Darknet's C (image.c
# letterbox_image, yolo_layer.c get_yolo_box / get_yolo_detections / correct_yolo_boxes), against the runtime's.


def darknet_letterbox_size(w: int, h: int, netw: int, neth: int) -> tuple[int, int, int, int]:
    """letterbox_image's resized size and where embed_image puts it: new_w, new_h, dx, dy (C int division)."""
    if netw / w < neth / h:
        new_w, new_h = netw, (h * netw) // w
    else:
        new_w, new_h = (w * neth) // h, neth
    return new_w, new_h, (netw - new_w) // 2, (neth - new_h) // 2


def darknet_letterbox_blob(image_bgr: np.ndarray, netw: int, neth: int, fill: float) -> np.ndarray:
    """[3, neth, netw] RGB in 0..1: the picture resized (bilinear) and centred on `fill` (Darknet's is 0.5)."""
    h, w = image_bgr.shape[:2]
    new_w, new_h, dx, dy = darknet_letterbox_size(w, h, netw, neth)
    rgb = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    blob = np.full((3, neth, netw), fill, np.float32)
    blob[:, dy:dy + new_h, dx:dx + new_w] = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return blob


def darknet_letterbox_detections(outputs, heads, netw, neth, w, h, thresh):
    """(label, score, x1, y1, x2, y2) in the picture's pixels: Darknet's decoding of [yolo] heads and
    correct_yolo_boxes(letter=1), except that the offset taken off is the whole pixels embed_image put the
    picture at ((netw - new_w) / 2 in int division; correct_yolo_boxes takes the unrounded half, half a pixel
    more for an odd pad); clipped to the picture as Darknet does when it writes results."""
    def logistic(v):
        return 1 / (1 + math.exp(-v))

    new_w, new_h, dx, dy = darknet_letterbox_size(w, h, netw, neth)
    found = []
    for head in heads:
        raw = np.asarray(outputs[head.output], np.float64)[0]
        lh, lw = raw.shape[1:]
        p = raw.reshape(len(head.mask), 5 + head.classes, lh, lw)
        s = head.scale_x_y
        for a, m in enumerate(head.mask):
            for row in range(lh):
                for col in range(lw):
                    objectness = logistic(p[a, 4, row, col])
                    if not objectness > thresh:
                        continue
                    bx = (col + logistic(p[a, 0, row, col]) * s - (s - 1) / 2) / lw  # get_yolo_box
                    by = (row + logistic(p[a, 1, row, col]) * s - (s - 1) / 2) / lh
                    bw = math.exp(p[a, 2, row, col]) * head.anchors[2 * m] / netw
                    bh = math.exp(p[a, 3, row, col]) * head.anchors[2 * m + 1] / neth
                    x = (bx * netw - dx) / new_w * w  # correct_yolo_boxes, to pixels
                    y = (by * neth - dy) / new_h * h
                    bw, bh = bw * netw / new_w * w, bh * neth / new_h * h
                    box = [min(max(x - bw / 2, 0), w), min(max(y - bh / 2, 0), h),
                           min(max(x + bw / 2, 0), w), min(max(y + bh / 2, 0), h)]
                    for c in range(head.classes):
                        prob = objectness * logistic(p[a, 5 + c, row, col])
                        if prob > thresh:
                            found.append((c, prob, *box))
    return sorted(found, key=lambda d: (-d[1], d[0]))


@pytest.mark.parametrize("size", [(773, 512), (640, 424), (258, 424), (424, 258), (500, 500), (416, 417),
                                  (1352, 900), (3, 7)])
@pytest.mark.parametrize("net", [(416, 416), (416, 320)])
def test_letterbox_places_the_picture_as_darknet_and_maps_back_exactly(size, net):
    (w, h), (netw, neth) = size, net
    new_w, new_h, dx, dy = darknet_letterbox_size(w, h, netw, neth)
    preprocessing = Preprocessing(netw, neth, "fit_to_window_letterbox", reverse_input_channels=True,
                                  scale=(255.0, 255.0, 255.0), pad_value=128)
    tensor, transform = preprocessing(np.full((h, w, 3), 255, np.uint8))
    inside = np.argwhere(tensor[0] == 1.0)  # a white picture on the grey pad
    assert inside.min(axis=0).tolist() == [dy, dx] and inside.max(axis=0).tolist() == [dy + new_h - 1,
                                                                                       dx + new_w - 1]
    assert len(inside) == new_w * new_h
    assert np.all(tensor[:, tensor[0] != 1.0] == np.float32(128) / np.float32(255))
    # the picture's corners and a point inside it come back exactly
    corners = transform.to_original(np.array([[dx, dy, dx + new_w, dy + new_h]], np.float32))
    assert corners[0] == pytest.approx([0, 0, w, h], abs=1e-3)
    point = np.array([[dx + 0.3 * new_w, dy + 0.7 * new_h] * 2], np.float32)
    assert transform.to_original(point)[0] == pytest.approx([0.3 * w, 0.7 * h] * 2, abs=1e-3)


@pytest.fixture(scope="module")
def letterboxed(tmp_path_factory) -> ov.Model:
    """The real yolov4-tiny with letter_box=1 in its [net]."""
    files = reference_models.yolov4_tiny()
    cfg = tmp_path_factory.mktemp("letterbox") / "yolov4-tiny-letterbox.cfg"
    text, count = re.subn(r"(?m)^\[net\]$", "[net]\nletter_box=1", files.cfg.read_text(), count=1)
    assert count == 1
    cfg.write_text(text)
    return convert_darknet(cfg, files.weights, names=files.names)


@pytest.mark.parametrize("crop", ["full", "left"])
def test_letterboxed_detections_match_darknet_formulas(letterboxed, crop):
    strings = model_info_strings(letterboxed)
    assert strings["resize_type"] == "fit_to_window_letterbox"
    image = cv2.imread(str(REPO / "data" / "images" / "person.jpg"))  # 640x424
    if crop == "left":
        image = np.ascontiguousarray(image[:, :258])  # 258x424: portrait
    h, w = image.shape[:2]
    new_w, new_h, dx, dy = darknet_letterbox_size(w, h, 416, 416)
    assert (416 - new_w + 416 - new_h) % 2 == 1  # an odd pad, the extra pixel right or below
    if crop == "full":
        assert new_h != round(h * 416 / w)  # Darknet floors the size where rounding would not

    # the runtime: Preprocessing, the model, Decoder (no NMS, no cap: every prediction over the threshold)
    preprocessing = Preprocessing.from_model(letterboxed)
    tensor, transform = preprocessing(image)
    compiled = ov.Core().compile_model(letterboxed, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    outputs = {port.get_any_name(): value for port, value in compiled(tensor[None]).items()}
    thresh = 0.05
    ours = Decoder.from_model(letterboxed, confidence_threshold=thresh, iou_threshold=1.0,
                              max_detections=0)(outputs, transform, (w, h))

    # the test's letterbox: Darknet's 0.5 grey differs from the model's pad by at most half a grey level,
    # and with the model's pad the blob is the runtime's tensor
    assert np.abs(tensor - darknet_letterbox_blob(image, 416, 416, 0.5)).max() <= 0.5 / 255 + 1e-7
    pad = np.float32(int(strings["pad_value"])) / np.float32(255)
    blob = darknet_letterbox_blob(image, 416, 416, pad)
    assert np.array_equal(tensor, blob)
    raw = {port.get_any_name(): value for port, value in compiled(blob[None]).items()}
    network = load_cfg(reference_models.yolov4_tiny().cfg)
    theirs = np.array(darknet_letterbox_detections(raw, network.heads, 416, 416, w, h, thresh), np.float64)

    print(f"{crop}: {len(ours)} detections, {w}x{h} -> {new_w}x{new_h} at ({dx}, {dy})")
    assert len(ours) >= 3 and len(ours) == len(theirs)
    order = np.lexsort((ours.labels, -ours.scores))
    assert ours.labels[order].tolist() == theirs[:, 0].astype(int).tolist()
    assert ours.scores[order] == pytest.approx(theirs[:, 1], rel=1e-5)
    assert np.abs(ours.boxes[order] - theirs[:, 2:]).max() < 2e-3
