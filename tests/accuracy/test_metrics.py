"""COCO metrics against pycocotools itself, the numpy AP@0.5 against pycocotools, and the parent comparison."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from workbench_runtime.detection import Detections
from workbench_runtime.errors import InvalidArgument
from services.common.metrics import (ClassComparison, ImageComparison, average_precision, coco_metrics,
                                     compare_predictions, match_predictions, parent_agreement, query_rows)

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "dog"}]


def random_set(seed: int, images: int = 12, classes: int = 3) -> tuple[dict, dict]:
    """Ground truth and noisy predictions (some jittered copies, some misses, some false boxes), as Detections."""
    rng = np.random.default_rng(seed)
    truth, found = {}, {}
    for image_id in range(1, images + 1):
        n = int(rng.integers(0, 7))
        xy = rng.uniform(0, 500, (n, 2))
        wh = rng.uniform(8, 200, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, classes, n)
        truth[image_id] = Detections(boxes, np.ones(n), labels)
        keep = rng.random(n) < 0.8
        jitter = rng.normal(0, 6, (int(keep.sum()), 4))
        extra = int(rng.integers(0, 4))
        extra_xy = rng.uniform(0, 500, (extra, 2))
        extra_boxes = np.concatenate([extra_xy, extra_xy + rng.uniform(8, 150, (extra, 2))], axis=1)
        p_boxes = np.concatenate([boxes[keep] + jitter, extra_boxes])
        p_labels = np.concatenate([labels[keep], rng.integers(0, classes, extra)])
        found[image_id] = Detections(p_boxes, rng.uniform(0.01, 1.0, len(p_labels)), p_labels).sorted()
    return truth, found


def as_coco(truth: dict, found: dict) -> tuple[dict, list[dict]]:
    """The same boxes as a COCO ground-truth dict and results list (labels 0, 1, 2 -> categories 1, 3, 7)."""
    to_category = [c["id"] for c in CATEGORIES]
    gt = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 700, "height": 700} for i in truth],
          "categories": CATEGORIES, "annotations": []}
    for image_id, t in truth.items():
        for box, label in zip(t.boxes.tolist(), t.labels.tolist()):
            x1, y1, x2, y2 = box
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                      "category_id": to_category[label], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                      "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    results = []
    for image_id, f in found.items():
        for box, score, label in zip(f.boxes.tolist(), f.scores.tolist(), f.labels.tolist()):
            x1, y1, x2, y2 = box
            results.append({"image_id": image_id, "category_id": to_category[label],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return gt, results


def pycocotools_directly(gt: dict, results: list[dict], iou_thresholds=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    import copy
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluation = COCOeval(coco_gt, coco_dt, "bbox")
        if iou_thresholds is not None:
            evaluation.params.iouThrs = np.array(iou_thresholds)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


# ------------------------------------------------------------------------------------------------ COCO


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_metrics_equal_pycocotools_run_directly(seed, capsys):
    gt, results = as_coco(*random_set(seed))
    ours = coco_metrics(gt, results)
    assert capsys.readouterr().out == ""  # quiet
    theirs = pycocotools_directly(gt, results)
    # faster-coco-eval's numbers are pycocotools' own, to the last bit or so (C++ sums in another order)
    assert ours.stats == pytest.approx(tuple(theirs.stats), abs=1e-15)
    assert 0.1 < ours.ap < 0.95
    # per class: pycocotools' precision array, class by class
    precision = theirs.eval["precision"]
    for k, category in enumerate(theirs.params.catIds):
        values = precision[:, :, k, 0, -1]
        assert ours.per_class_ap[category] == pytest.approx(values[values > -1].mean(), abs=1e-15)
        assert ours.per_class_ap50[category] == pytest.approx(values[0][values[0] > -1].mean(), abs=1e-15)
    assert np.mean(list(ours.per_class_ap.values())) == pytest.approx(ours.ap, abs=1e-12)
    assert gt["annotations"][0].keys() == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}  # untouched
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"}


def test_predictions_equal_to_annotations_score_one():
    gt, _ = as_coco(*random_set(3))
    for a in gt["annotations"]:  # a minimal ground truth: no area, iscrowd or id
        del a["area"], a["iscrowd"], a["id"]
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"]]
    metrics = coco_metrics(gt, results)
    assert metrics.ap == metrics.ap50 == metrics.ap75 == metrics.ar100 == 1.0
    assert set(metrics.per_class_ap.values()) == {1.0}


def test_coco_metrics_edge_cases():
    gt, _ = as_coco(*random_set(4))
    empty = coco_metrics(gt, [])
    assert empty.ap == 0.0 and empty.ar100 == 0.0 and set(empty.per_class_ap.values()) == {0.0}
    with pytest.raises(InvalidArgument, match="images the ground truth does not have"):
        coco_metrics(gt, [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}])
    no_boxes = coco_metrics(dict(gt, annotations=[]), [])
    assert no_boxes.ap == -1.0 and no_boxes.per_class_ap == {}


# ------------------------------------------------------------------------------------ AP@0.5 in numpy


@pytest.mark.parametrize("seed", [0, 5, 6])
def test_average_precision_equals_pycocotools_at_one_threshold(seed):
    truth, found = random_set(seed, images=20)
    gt, results = as_coco(truth, found)
    for threshold in (0.5, 0.75):
        theirs = pycocotools_directly(gt, results, [threshold])
        ours = average_precision(found, truth, iou_threshold=threshold)
        assert ours.mean == pytest.approx(theirs.stats[0], abs=1e-12)
        precision = theirs.eval["precision"][0, :, :, 0, -1]
        for k, category in enumerate(theirs.params.catIds):
            label = [c["id"] for c in CATEGORIES].index(category)
            if (precision[:, k] > -1).any():
                assert ours.per_class[label] == pytest.approx(precision[:, k].mean(), abs=1e-12)


def test_average_precision_cases():
    box = Detections([[0, 0, 10, 10]], [1.0], [0])
    assert average_precision({1: box}, {1: box}).mean == pytest.approx(1.0, abs=1e-12)  # 1 / (1 + eps), as COCO
    assert average_precision({}, {1: box}).mean == 0.0
    assert average_precision({1: box}, {1: Detections.empty()}).mean == -1.0  # no ground truth: undefined
    # a false positive ranked above the true one halves precision at every recall
    two = Detections([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])
    assert average_precision({1: two}, {1: box}).mean == pytest.approx(0.5, abs=1e-9)


def test_parent_agreement():
    parent = {1: Detections([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.2], [0, 1])}
    # only the 0.9 box is reference; the 0.2 box is of a class the reference lacks: not counted
    same = parent_agreement(parent, parent, reference_threshold=0.5)
    assert same == pytest.approx(1.0, abs=1e-12)  # 1 / (1 + eps), as COCO
    moved = {1: Detections([[3, 3, 13, 13]], [0.9], [0])}  # IoU 49/151 < 0.5
    assert parent_agreement(moved, parent, reference_threshold=0.5) == 0.0
    nothing = {1: Detections([[0, 0, 10, 10]], [0.3], [0])}
    assert parent_agreement(nothing, nothing, reference_threshold=0.5) == 1.0  # both see nothing confident
    assert parent_agreement(parent, nothing, reference_threshold=0.5) == 0.0


# ------------------------------------------------------------------------------------------ matching


def det(rows):
    """Detections from (x1, y1, x2, y2, score, label) rows."""
    if not rows:
        return Detections.empty()
    table = np.asarray(rows, np.float64)
    return Detections(table[:, :4], table[:, 4], table[:, 5].astype(int))


def test_match_picks_highest_iou_unused_parent_box():
    parent = det([[0, 0, 10, 10, 0.9, 0], [1, 0, 11, 10, 0.8, 0]])
    optimized = det([[1, 0, 11, 10, 0.7, 0]])  # IoU 1.0 with parent 1, 0.82 with parent 0
    assert match_predictions(optimized, parent).tolist() == [1]


def test_two_optimized_boxes_on_one_parent_box():
    parent = det([[0, 0, 10, 10, 0.9, 0]])
    optimized = det([[0, 0, 10, 10, 0.5, 0], [0, 0, 10, 9, 0.8, 0]])
    # the higher-scored optimized box (index 1) is taken first and gets the parent box, though its IoU is lower
    assert match_predictions(optimized, parent).tolist() == [-1, 0]


def test_second_box_falls_back_to_the_next_parent_box():
    parent = det([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 8, 0.6, 0]])
    optimized = det([[0, 0, 10, 10, 0.8, 0], [0, 0, 10, 10, 0.7, 0]])
    assert match_predictions(optimized, parent).tolist() == [0, 1]  # the second: IoU 0.8 with the unused one


def test_ties():
    # equal IoU with two parent boxes: the higher-scored parent box wins
    parent = det([[0, 0, 10, 10, 0.6, 0], [2, 0, 12, 10, 0.9, 0]])
    optimized = det([[1, 0, 11, 10, 0.8, 0]])
    assert match_predictions(optimized, parent).tolist() == [1]
    # equal optimized scores: the earlier one is taken first
    parent = det([[0, 0, 10, 10, 0.9, 0]])
    optimized = det([[0, 0, 10, 9, 0.8, 0], [0, 0, 10, 10, 0.8, 0]])
    assert match_predictions(optimized, parent).tolist() == [0, -1]
    # IoU exactly 0.5 is a match
    parent = det([[0, 0, 10, 10, 0.9, 0]])
    assert match_predictions(det([[0, 0, 10, 5, 0.9, 0]]), parent).tolist() == [0]


def test_class_mismatch_and_low_iou_do_not_match():
    parent = det([[0, 0, 10, 10, 0.9, 0]])
    assert match_predictions(det([[0, 0, 10, 10, 0.9, 1]]), parent).tolist() == [-1]
    assert match_predictions(det([[4, 4, 14, 14, 0.9, 0]]), parent).tolist() == [-1]
    # an unmatched box takes nothing: the next one still gets the parent box
    optimized = det([[4, 0, 14, 10, 0.9, 0], [0, 0, 10, 10, 0.5, 0]])  # IoU 6/14 < 0.5, then 1.0
    assert match_predictions(optimized, parent).tolist() == [-1, 0]


def test_empty_images():
    assert match_predictions(Detections.empty(), det([[0, 0, 1, 1, 0.9, 0]])).tolist() == []
    assert match_predictions(det([[0, 0, 1, 1, 0.9, 0]]), Detections.empty()).tolist() == [-1]
    comparison = compare_predictions({1: Detections.empty()}, {1: Detections.empty(), 2: Detections.empty()},
                                     reference_threshold=0.5)
    assert [(r.image_id, r.a, r.b, r.matches) for r in comparison.images] == [(1, 0, 0, 0), (2, 0, 0, 0)]
    assert comparison.classes == []
    assert comparison.totals.f1 == 1.0 and comparison.totals.images_differing == 0


def comparison_example():
    parent = {
        1: det([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 1], [50, 50, 60, 60, 0.3, 1]]),
        2: det([[0, 0, 10, 10, 0.9, 2]]),
        3: det([]),
    }
    optimized = {
        1: det([[0, 0, 10, 10, 0.95, 0], [20, 20, 30, 31, 0.7, 1], [50, 50, 60, 60, 0.6, 1]]),
        2: det([[0, 0, 10, 10, 0.4, 2]]),
        3: det([[5, 5, 9, 9, 0.99, 0]]),
    }
    return compare_predictions(optimized, parent, reference_threshold=0.5, image_names={1: "a.jpg", 2: "b.jpg"},
                               label_names=["person", "car", "dog"])


def test_compare_predictions_rows_and_totals():
    comparison = comparison_example()
    assert [(r.image_id, r.image_name, r.a, r.b, r.matches) for r in comparison.images] == [
        (1, "a.jpg", 3, 2, 2), (2, "b.jpg", 0, 1, 0), (3, "3", 1, 0, 0)]
    assert [(r.image_id, r.class_name, r.a, r.b, r.matches, r.precision) for r in comparison.classes] == [
        (1, "person", 1, 1, 1, 1.0), (1, "car", 2, 1, 1, 0.5), (2, "dog", 0, 1, 0, 0.0), (3, "person", 1, 0, 0, 0.0)]
    totals = comparison.totals
    assert (totals.a, totals.b, totals.matches) == (4, 3, 2)
    assert totals.f1 == pytest.approx(4 / 7) and totals.precision == 0.5 and totals.recall == pytest.approx(2 / 3)
    assert totals.images == 3 and totals.images_differing == 3


def test_query_rows_sorts_filters_and_pages():
    comparison = comparison_example()
    rows = comparison.classes
    by_a = query_rows(rows, order_by="-a,class_name")
    assert [(r.image_id, r.class_name) for r in by_a.rows] == [(1, "car"), (1, "person"), (3, "person"), (2, "dog")]
    assert by_a.next_page_token == "" and by_a.total_size == 4
    same = [r for r in rows if r.a == r.b and r.matches == r.a]
    assert query_rows(rows, only_differences=True).total_size == len(rows) - len(same)
    assert [r.image_id for r in query_rows(rows, class_name="PERSON").rows] == [1, 3]
    # pages of 1 walk the whole sorted listing
    seen, token = [], ""
    while True:
        page = query_rows(rows, order_by="-matches", page_size=1, page_token=token)
        seen.extend(page.rows)
        token = page.next_page_token
        if not token:
            break
    assert [r.matches for r in seen] == [1, 1, 0, 0] and len(seen) == 4
    first = query_rows(rows, order_by="-matches", page_size=1)
    with pytest.raises(InvalidArgument) as error:
        query_rows(rows, order_by="matches", page_size=1, page_token=first.next_page_token)
    assert error.value.field == "page_token"
    with pytest.raises(InvalidArgument):
        query_rows(rows, page_token="garbage!")
    with pytest.raises(InvalidArgument) as error:
        query_rows(rows, order_by="-nonsense")
    assert error.value.field == "order_by"
    with pytest.raises(InvalidArgument):
        query_rows(comparison.images, class_name="person")
    images = query_rows(comparison.images, order_by="-image_name")
    assert [r.image_name for r in images.rows] == ["b.jpg", "a.jpg", "3"]
    assert isinstance(images.rows[0], ImageComparison) and isinstance(rows[0], ClassComparison)
