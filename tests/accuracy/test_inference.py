"""The evaluation pipeline against plain one-at-a-time inference, COCO results JSON both ways, and the pictures."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest

from services import reference_models
from services.accuracy.inference import (_rounded, annotations_as_detections, evaluate, from_coco_results,
                                        predictions_from_bytes, predictions_to_bytes, to_coco_results)
from services.accuracy.render import BoxSet, render_boxes, render_comparison, render_predictions
from workbench_runtime.detection import Decoder, Detections
from workbench_runtime.errors import Cancelled, InvalidArgument
from services.common.labels import map_labels
from services.common.metrics import coco_metrics
from workbench_runtime.preprocess import Preprocessing
from services.converter.darknet import convert_darknet

REPO = Path(__file__).resolve().parents[2]
PHOTOS = sorted((REPO / "data" / "images").glob("*.jpg"))
FRAMES = sorted((REPO / "data" / "vtest").glob("*.jpg"))
LABELS = ["face", "Shirt", "Trousers", "Dress", "Coat", "Sandal", "Boot", "Handgun", "Shotgun", "Knife"]


@pytest.fixture(scope="module")
def tiny() -> ov.Model:
    files = reference_models.yolov4_tiny()
    return convert_darknet(files.cfg, files.weights, names=files.names)


def one_at_a_time(model, paths, decoder, preprocessing) -> dict:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    found = {}
    for image_id, path in paths:
        image = cv2.imread(str(path))
        tensor, transform = preprocessing(image)
        outputs = {port.get_any_name(): value for port, value in compiled(tensor[None]).items()}
        found[image_id] = decoder(outputs, transform, (image.shape[1], image.shape[0]))
    return found


def test_evaluate_equals_one_image_at_a_time(tiny):
    images = [(i, p) for i, p in enumerate(PHOTOS + FRAMES[::4], start=1)]
    decoder = Decoder.from_model(tiny, confidence_threshold=0.01)
    preprocessing = Preprocessing.from_model(tiny)
    reports = []
    found = evaluate(tiny, images, decoder, preprocessing, precision_hint="f32",
                     report=lambda *args, **metrics: reports.append((args, metrics)))
    expected = one_at_a_time(tiny, images, decoder, preprocessing)
    assert list(found) != [] and set(found) == set(expected)
    for image_id, want in expected.items():
        got = found[image_id]
        assert got.labels.tolist() == want.labels.tolist(), image_id
        assert got.boxes == pytest.approx(want.boxes, abs=1e-3)
        assert got.scores == pytest.approx(want.scores, abs=1e-5)
    assert sum(len(d) for d in found.values()) > 50
    assert reports[0][0][:2] == ("evaluate", 0.0)
    assert reports[-1][0] == ("evaluate", 1.0, f"{len(images)} of {len(images)} images")
    assert reports[-1][1]["images_per_second"] > 0
    # boxes lie inside their images
    width, height = 768, 576
    frame = found[len(PHOTOS) + 1].boxes
    assert (frame >= 0).all() and (frame[:, 0::2] <= width).all() and (frame[:, 1::2] <= height).all()


def test_evaluate_takes_a_generator_and_the_default_precision(tiny):
    decoder = Decoder.from_model(tiny)
    found = evaluate(tiny, ((p.stem, p) for p in FRAMES[:6]), decoder, Preprocessing.from_model(tiny))
    assert sorted(found) == sorted(p.stem for p in FRAMES[:6])


def test_evaluate_errors(tiny, tmp_path):
    decoder = Decoder.from_model(tiny)
    preprocessing = Preprocessing.from_model(tiny)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(PHOTOS[0].read_bytes()[:200])
    with pytest.raises(InvalidArgument, match="image 7 \\(broken.jpg\\)") as error:
        evaluate(tiny, [(1, PHOTOS[0]), (7, broken), (8, PHOTOS[1])], decoder, preprocessing)
    assert error.value.field == "dataset"
    with pytest.raises(InvalidArgument, match="listed twice"):
        evaluate(tiny, [(1, PHOTOS[0]), (1, PHOTOS[1])], decoder, preprocessing)
    with pytest.raises(InvalidArgument, match="precision"):
        evaluate(tiny, [(1, PHOTOS[0])], decoder, preprocessing, precision_hint="int3")


def test_a_report_that_raises_stops_the_evaluation(tiny):
    calls = []

    def report(stage, fraction, message="", **metrics):
        calls.append(fraction)
        if fraction and fraction > 0:
            raise Cancelled("cancelled by the caller")

    before = threading.active_count()
    images = [(i, FRAMES[i % len(FRAMES)]) for i in range(400)]
    with pytest.raises(Cancelled):
        evaluate(tiny, images, Decoder.from_model(tiny), Preprocessing.from_model(tiny), report=report)
    assert len(calls) == 2  # compiling, then the first progress report raised
    assert threading.active_count() <= before  # the reading threads are gone


# --------------------------------------------------------------------------------------------- COCO JSON


def test_coco_results_round_trip():
    found = {
        10: Detections([[10, 20, 50, 80], [0, 0, 5, 5], [1, 1, 2, 2]], [0.9, 0.2, 0.5], [0, 2, 9]),
        11: Detections.empty(),
    }
    categories = [{"id": 1, "name": "face"}, {"id": 5, "name": "trousers"}]
    mapping = map_labels(LABELS, categories)  # face -> 1, Trousers -> 5, the others unmatched
    results = to_coco_results(found, mapping)
    assert results == [
        {"image_id": 10, "category_id": 1, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 0.9},
        {"image_id": 10, "category_id": 5, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.2},
    ]
    assert to_coco_results(found, {0: 1, 2: 5}) == results  # a plain dict does as well
    assert len(to_coco_results(found, mapping, min_score=0.5)) == 1
    back = from_coco_results(results, mapping, image_ids=[10, 11])
    assert back[10] == Detections([[10, 20, 50, 80], [0, 0, 5, 5]], [0.9, 0.2], [0, 2])
    assert len(back[11]) == 0
    assert from_coco_results(results, {0: 1}).keys() == {10}


def test_coco_results_are_each_number_rounded_as_round_does():
    """Rounded a whole image at a time, the numbers equal round(value, 3) / round(score, 6) of each detection,
    ties included: exact binary halves, float32 values next to a decimal half, and float64 decimal halves."""
    rng = np.random.default_rng(7)
    corners = rng.random((5000, 2)) * 700
    sizes = rng.random((5000, 2)) * 90
    boxes = np.concatenate([corners, corners + sizes], axis=1)
    boxes[:1000] = np.round(boxes[:1000] * 16) / 16  # exact binary fractions: many exact ties at 3 decimals
    boxes[1000:2000] = np.floor(boxes[1000:2000] * 1000) / 1000 + 0.0005  # decimal ties, inexact in binary
    scores = rng.random(5000)
    scores[:500] = np.floor(scores[:500] * 1e6) / 1e6 + 5e-7
    found = {1: Detections(boxes, scores, rng.integers(0, 3, 5000))}
    results = to_coco_results(found, {0: 1, 1: 2, 2: 3})
    kept = found[1]  # as stored: float32
    expected = [[round(v, 3) for v in (x1, y1, x2 - x1, y2 - y1)] for x1, y1, x2, y2 in kept.boxes.tolist()]
    assert [r["bbox"] for r in results] == expected
    assert [r["score"] for r in results] == [round(v, 6) for v in kept.scores.tolist()]
    # float64 decimal ties, where rint(v * 1000) / 1000 alone is off for about a third of them
    ties = np.arange(0, 200_000) / 1000 + 0.0005
    assert _rounded(ties, 3) == [round(v, 3) for v in ties.tolist()]
    unrounded = to_coco_results(found, {0: 1, 1: 2, 2: 3}, decimals=None)
    assert [r["bbox"] for r in unrounded] == [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in kept.boxes.tolist()]


def test_annotations_as_detections_and_metrics_of_perfect_predictions():
    gt = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
          "categories": [{"id": 1, "name": "face"}, {"id": 5, "name": "trousers"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 20, 40], "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [12, 2, 6, 6]},
                          {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 99, 99], "iscrowd": 1}]}
    mapping = map_labels(LABELS, gt["categories"])
    truth = annotations_as_detections(gt, mapping)
    assert len(truth[1]) == 2 and len(truth[2]) == 0
    assert sorted(truth[1].labels.tolist()) == [0, 2]
    metrics = coco_metrics(gt, to_coco_results(truth, mapping))
    assert metrics.ap == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ pictures


def decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def colour_pixels(picture: np.ndarray, bgr) -> int:
    return int(np.all(np.abs(picture.astype(int) - bgr) <= 2, axis=2).sum())


def test_render_comparison_draws_both_sets_and_a_legend():
    image = cv2.imread(str(FRAMES[0]))
    parent = Detections([[100, 100, 200, 300], [400, 50, 450, 120]], [0.9, 0.6], [2, 0])
    optimized = Detections([[104, 98, 204, 310], [10, 10, 20, 20]], [0.8, 0.1], [2, 4])
    picture = decode_png(render_comparison(image, parent, optimized, label_names=LABELS, threshold=0.25,
                                           title="vtest_0000.jpg"))
    assert picture.shape[1] == 768 and picture.shape[0] > 576  # the legend strip above the image
    strip = picture[:picture.shape[0] - 576]
    from services.accuracy.render import BLUE, ORANGE
    assert colour_pixels(strip, BLUE) > 20 and colour_pixels(strip, ORANGE) > 20
    body = picture[picture.shape[0] - 576:]
    assert colour_pixels(body, BLUE) > 300 and colour_pixels(body, ORANGE) > 200
    assert colour_pixels(body[:60, :60], ORANGE) == 0  # the 0.1 box is under the threshold


def test_render_scales_small_and_large_images():
    small = np.full((120, 160, 3), 90, np.uint8)
    boxes = Detections([[10, 10, 60, 60]], [0.5], [1])
    picture = decode_png(render_predictions(small, boxes, boxes, label_names=LABELS))
    assert picture.shape[1] == 640  # enlarged so labels stay readable
    large = np.full((3000, 2000, 3), 90, np.uint8)
    picture = decode_png(render_boxes(large, [BoxSet("a", boxes), BoxSet("b", Detections.empty()),
                                              BoxSet("c", boxes, show_scores=False)]))
    assert max(picture.shape[:2]) < 1400 and picture.shape[0] > 1280
    from_file = decode_png(render_boxes(PHOTOS[0], [BoxSet("x", boxes)]))
    assert from_file.shape[1] == cv2.imread(str(PHOTOS[0])).shape[1]


def test_predictions_round_trip_through_bytes():
    found = {3: Detections([[1, 2, 3, 4], [5, 6, 7, 8.5]], [0.9, 0.1], [4, 0]), "frame b": Detections.empty(),
             7: Detections([[0, 0, 1, 1]], [0.5], [9])}
    back = predictions_from_bytes(predictions_to_bytes(found))
    assert list(back) == list(found) and all(back[k] == found[k] for k in found)
    assert predictions_from_bytes(predictions_to_bytes({})) == {}
    with pytest.raises(InvalidArgument):
        predictions_from_bytes(b"not an npz")


def test_evaluations_through_the_tensor_cache_are_bit_identical(tiny, tmp_path):
    """Uncached, a first evaluation filling the cache and one reading it: the same predictions, byte for byte."""
    from services.common.tensor_cache import TensorCache

    images = [(i, p) for i, p in enumerate(PHOTOS + FRAMES[::8] + PHOTOS[:2], start=1)]  # repeats hit early
    decoder = Decoder.from_model(tiny, confidence_threshold=0.001)
    preprocessing = Preprocessing.from_model(tiny)
    cache = TensorCache(tmp_path / "cache")
    runs = [evaluate(tiny, images, decoder, preprocessing, precision_hint="f32", cache=c)
            for c in (None, cache, cache, None)]
    distinct = len(PHOTOS) + len(FRAMES[::8])
    assert cache.misses + cache.hits == 2 * len(images) and distinct <= cache.misses <= len(images)
    mapping = {k: k + 1 for k in range(len(LABELS))}
    stored = [[(i, d.boxes.tobytes(), d.scores.tobytes(), d.labels.tobytes()) for i, d in r.items()] for r in runs]
    results = [to_coco_results(r, mapping, decimals=None) for r in runs]
    assert len({json.dumps(to_coco_results(r, mapping)) for r in runs}) == 1  # the stored predictions JSON
    assert sum(len(d) for d in runs[0].values()) > 100
    assert stored[1] == stored[0] and stored[2] == stored[0] and stored[3] == stored[0]
    assert results[1] == results[0] and results[2] == results[0]
    gt = {"images": [{"id": i, "width": 1, "height": 1} for i, _ in images],
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(LABELS)],
          "annotations": [dict(a, id=n + 1, area=a["bbox"][2] * a["bbox"][3], iscrowd=0)
                          for n, a in enumerate(to_coco_results(runs[0], mapping, min_score=0.25))]}
    metrics = [coco_metrics(gt, r) for r in results[:3]]
    assert metrics[1] == metrics[0] and metrics[2] == metrics[0]
