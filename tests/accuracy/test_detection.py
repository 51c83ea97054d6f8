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
import math
import textwrap
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
from tests.opencv4 import run_opencv4

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
