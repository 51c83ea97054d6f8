"""Detection metrics: COCO mAP (pycocotools' COCOeval), the optimized-vs-parent comparison of DL Workbench, parent
agreement.

COCO metrics (`coco_metrics`) are pycocotools' own numbers, computed by faster-coco-eval (its COCOeval in C++),
its printing silenced. Undefined values are
pycocotools' -1 (no ground truth at all; per class, categories without ground truth are left out).

Comparison of an optimized model (A) with its parent (B), as DL Workbench's "compare with parent" report:
the parent's predictions with score >= reference_threshold are the reference, and the optimized model's
predictions are counted with the same threshold (score >= reference_threshold), so both sides are what each
model would report at that confidence. Per image and class, the optimized boxes are taken by descending score
(equal scores: in their given order); each one goes to the parent box of its class, not yet taken, with the
highest IoU (equal IoUs: the higher-scored parent box, then the earlier one), and is a match when that IoU
>= iou_threshold (0.5); otherwise it matches nothing and takes nothing. A parent box is matched at most once.
Rows: per image (image_id, image_name, a, b, matches) and per image and class (..., class_id, class_name,
a, b, matches, precision = matches / a, 0 when a == 0). Totals: A, B, matches, F1 = 2 * matches / (A + B)
(1 when A + B == 0: nothing to disagree on), precision matches / A and recall matches / B (1 when the
denominator is 0). `query_rows` sorts, filters and pages the stored rows.

Parent agreement (`parent_agreement`): AP@0.5 of the optimized model's predictions (all that the caller
decoded, typically from a 0.001 confidence floor) against the parent's predictions with score >=
reference_threshold taken as ground truth; mean over the classes the reference holds. It is computed here in
numpy exactly as pycocotools' COCOeval does with iouThrs=[0.5] (greedy matching by descending score to the
best-IoU unmatched box, maxDets per image and class, 101-point interpolated precision, area range "all"),
without pycocotools' per-call overhead, so the quantizer's AccuracyAware loop can call it on every step. When
the reference holds no box at all, the agreement is 1.0 if the optimized model has no prediction with score >=
reference_threshold either, else 0.0.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench_runtime.detection import Detections, iou_matrix
from workbench_runtime.errors import InvalidArgument

ImageId = Hashable
REC_THRESHOLDS = np.linspace(0.0, 1.00, 101)  # COCO's recThrs
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_COCOEVAL = threading.Lock()  # redirect_stdout swaps sys.stdout for the whole process: one evaluation at a time


# ------------------------------------------------------------------------------------------------ COCO


@dataclass(frozen=True)
class CocoMetrics:
    ap: float  # AP@[.5:.95], area all, 100 detections
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    ar1: float
    ar10: float
    ar100: float
    ar_small: float
    ar_medium: float
    ar_large: float
    per_class_ap: dict[int, float] = field(default_factory=dict)  # category id -> AP@[.5:.95]
    per_class_ap50: dict[int, float] = field(default_factory=dict)  # category id -> AP@.5
    per_class_ar100: dict[int, float] = field(default_factory=dict)  # category id -> AR@100

    @property
    def stats(self) -> tuple[float, ...]:
        """pycocotools' 12 summary numbers, in its order."""
        return (self.ap, self.ap50, self.ap75, self.ap_small, self.ap_medium, self.ap_large,
                self.ar1, self.ar10, self.ar100, self.ar_small, self.ar_medium, self.ar_large)


def coco_metrics(ground_truth: Mapping, predictions: Sequence[Mapping], *, max_detections: int = 100) -> CocoMetrics:
    """COCO bbox metrics of predictions ([{image_id, category_id, bbox [x, y, w, h], score}]) against a COCO
    ground-truth dict (images, annotations, categories; missing area / iscrowd / id are filled in as w*h, 0 and
    1, 2, ...). Neither argument is modified. InvalidArgument when a prediction names an image the ground truth
    does not have. max_detections: the last of COCO's maxDets (1, 10, 100)."""
    # faster-coco-eval: pycocotools' COCOeval in C++, the same numbers (tests/accuracy/test_metrics.py compares
    # them with pycocotools run directly) in a quarter of the time, which a whole evaluation of many images feels
    from faster_coco_eval import COCO, COCOeval_faster as COCOeval

    gt = _ground_truth(ground_truth)
    images = {image["id"] for image in gt["images"]}
    unknown = {p["image_id"] for p in predictions} - images
    if unknown:
        raise InvalidArgument(f"predictions name {len(unknown)} images the ground truth does not have, e.g. "
                              f"{sorted(unknown, key=str)[:3]}", field="predictions")
    with _COCOEVAL, contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        # the results as loadRes makes them for boxes, less the polygon it adds to each (box IoU never reads it)
        coco_dt = COCO()
        coco_dt.dataset = {"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                           "annotations": [dict(p, bbox=list(p["bbox"]), area=p["bbox"][2] * p["bbox"][3], id=n,
                                                iscrowd=0) for n, p in enumerate(predictions, 1)]}
        coco_dt.createIndex()
        evaluation = COCOeval(coco_gt, coco_dt, "bbox")
        evaluation.params.maxDets = [1, 10, max_detections]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [float(v) for v in evaluation.stats]
    precision = evaluation.eval["precision"]  # [T, R, K, A, M]
    recall = evaluation.eval["recall"]  # [T, K, A, M]
    t50 = int(np.argmin(np.abs(evaluation.params.iouThrs - 0.5)))
    per_class, per_class50, per_class_ar = {}, {}, {}
    for k, category in enumerate(evaluation.params.catIds):
        values = precision[:, :, k, 0, -1]
        if not (values > -1).any():
            continue  # no ground truth of this category
        per_class[int(category)] = float(values[values > -1].mean())
        at50 = values[t50]
        per_class50[int(category)] = float(at50[at50 > -1].mean())
        rec = recall[:, k, 0, -1]
        per_class_ar[int(category)] = float(rec[rec > -1].mean())
    return CocoMetrics(*stats, per_class_ap=per_class, per_class_ap50=per_class50, per_class_ar100=per_class_ar)


def _ground_truth(ground_truth: Mapping) -> dict:
    for key in ("images", "categories"):
        if key not in ground_truth:
            raise InvalidArgument(f"the ground truth has no {key!r}", field="ground_truth")
    annotations = []
    used = {a["id"] for a in ground_truth.get("annotations", []) if "id" in a}
    next_id = 1
    for annotation in ground_truth.get("annotations", []):
        annotation = dict(annotation)
        x, y, w, h = (float(v) for v in annotation["bbox"])
        annotation["bbox"] = [x, y, w, h]
        annotation.setdefault("area", w * h)
        annotation.setdefault("iscrowd", 0)
        if "id" not in annotation:
            while next_id in used:
                next_id += 1
            annotation["id"] = next_id
            used.add(next_id)
        annotations.append(annotation)
    return {"images": [dict(i) for i in ground_truth["images"]],
            "categories": [dict(c) for c in ground_truth["categories"]], "annotations": annotations}


# ------------------------------------------------------------------------------------ AP@0.5 in numpy


@dataclass(frozen=True)
class AveragePrecision:
    mean: float  # over the classes the ground truth holds; -1 when it holds none
    per_class: dict[int, float]  # label -> AP


def average_precision(predictions: Mapping[ImageId, Detections], ground_truth: Mapping[ImageId, Detections], *,
                      iou_threshold: float = 0.5, max_detections: int = 100) -> AveragePrecision:
    """COCO-style AP at one IoU threshold, of per-image Detections against per-image ground-truth Detections
    (their scores unused), classes by label. Equals pycocotools' COCOeval with iouThrs=[iou_threshold],
    maxDets=[max_detections], area "all", on the same boxes. Images missing on one side count as empty there."""
    gt_by_class: dict[int, int] = {}
    # per class: lists of (scores, matched flags) per image, in image order
    scored: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    threshold = min(iou_threshold, 1 - 1e-10)
    images = list(ground_truth) + [i for i in predictions if i not in ground_truth]
    for image_id in _sorted_ids(images):
        truth = ground_truth.get(image_id)
        found = predictions.get(image_id)
        truth_labels = truth.labels if truth is not None else np.zeros(0, np.int64)
        found_labels = found.labels if found is not None else np.zeros(0, np.int64)
        for label in np.union1d(truth_labels, found_labels).tolist():
            g = np.nonzero(truth_labels == label)[0] if truth is not None else np.zeros(0, np.int64)
            gt_by_class[label] = gt_by_class.get(label, 0) + len(g)
            if found is None:
                continue
            d = np.nonzero(found_labels == label)[0]
            if not len(d):
                continue
            d = d[np.argsort(-found.scores[d], kind="mergesort")][:max_detections]
            matched = np.zeros(len(d), bool)
            if len(g):
                ious = iou_matrix(found.boxes[d], truth.boxes[g])
                taken = np.zeros(len(g), bool)
                for i in np.flatnonzero(ious.max(axis=1) >= threshold).tolist():  # the rest can match nothing
                    row = np.where(taken, -1.0, ious[i])
                    best = row.max()
                    if best >= threshold:
                        j = len(row) - 1 - int(np.argmax(row[::-1]))  # pycocotools: the last of equal IoUs
                        taken[j] = matched[i] = True
            scored.setdefault(label, []).append((found.scores[d], matched))
    per_class = {}
    for label, count in gt_by_class.items():
        if count == 0:
            continue
        parts = scored.get(label, [])
        per_class[label] = _interpolated_ap(parts, count)
    mean = float(np.mean(list(per_class.values()))) if per_class else -1.0
    return AveragePrecision(mean, dict(sorted(per_class.items())))


def _interpolated_ap(parts: list[tuple[np.ndarray, np.ndarray]], positives: int) -> float:
    if not parts:
        return 0.0
    scores = np.concatenate([p[0] for p in parts])
    matched = np.concatenate([p[1] for p in parts])
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[order]).astype(float)
    fp = np.cumsum(~matched[order]).astype(float)
    recall = tp / positives
    precision = tp / (fp + tp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, REC_THRESHOLDS, side="left")
    q = np.where(index < len(precision), precision[np.minimum(index, len(precision) - 1)], 0.0)
    return float(q.mean())


def parent_agreement(optimized: Mapping[ImageId, Detections], parent: Mapping[ImageId, Detections], *,
                     reference_threshold: float, iou_threshold: float = 0.5, max_detections: int = 100) -> float:
    """AP@iou_threshold of the optimized predictions against the parent's with score >= reference_threshold."""
    reference = {image_id: found.above(reference_threshold) for image_id, found in parent.items()}
    if not any(len(found) for found in reference.values()):
        confident = any(len(found.above(reference_threshold)) for found in optimized.values())
        return 0.0 if confident else 1.0
    return average_precision(optimized, reference, iou_threshold=iou_threshold,
                             max_detections=max_detections).mean


def _sorted_ids(ids: Iterable[ImageId]) -> list[ImageId]:
    """Image ids sorted as pycocotools sorts them (numbers or strings; mixed kinds by their text)."""
    ids = list(dict.fromkeys(ids))
    try:
        return sorted(ids)
    except TypeError:
        return sorted(ids, key=lambda i: (type(i).__name__, str(i)))


# ---------------------------------------------------------------------- optimized vs parent comparison


@dataclass(frozen=True)
class ImageComparison:
    image_id: ImageId
    image_name: str
    a: int  # optimized predictions (score >= reference threshold)
    b: int  # parent predictions (score >= reference threshold)
    matches: int


@dataclass(frozen=True)
class ClassComparison:
    image_id: ImageId
    image_name: str
    class_id: int  # model label index
    class_name: str
    a: int
    b: int
    matches: int
    precision: float  # matches / a; 0 when a == 0


@dataclass(frozen=True)
class ComparisonTotals:
    a: int
    b: int
    matches: int
    f1: float  # 2 * matches / (a + b); 1 when a + b == 0
    precision: float  # matches / a; 1 when a == 0
    recall: float  # matches / b; 1 when b == 0
    images: int
    images_differing: int  # images with a != b or matches < min(a, b)


@dataclass(frozen=True)
class Comparison:
    images: list[ImageComparison]
    classes: list[ClassComparison]
    totals: ComparisonTotals
    reference_threshold: float
    iou_threshold: float


def match_predictions(optimized: Detections, parent: Detections, iou_threshold: float = 0.5) -> np.ndarray:
    """For each optimized detection, the index of the parent detection it matches, or -1 (see the module doc)."""
    result = np.full(len(optimized), -1, np.int64)
    if not len(optimized) or not len(parent):
        return result
    for label in np.intersect1d(optimized.labels, parent.labels).tolist():
        a = np.nonzero(optimized.labels == label)[0]
        a = a[np.argsort(-optimized.scores[a], kind="stable")]
        b = np.nonzero(parent.labels == label)[0]
        # parent candidates by descending score, so argmax picks the higher-scored one among equal IoUs
        b = b[np.argsort(-parent.scores[b], kind="stable")]
        ious = iou_matrix(optimized.boxes[a], parent.boxes[b])
        taken = np.zeros(len(b), bool)
        for i in range(len(a)):
            row = np.where(taken, -1.0, ious[i])
            j = int(np.argmax(row))
            if row[j] >= iou_threshold:
                taken[j] = True
                result[a[i]] = b[j]
    return result


def compare_predictions(optimized: Mapping[ImageId, Detections], parent: Mapping[ImageId, Detections], *,
                        reference_threshold: float, iou_threshold: float = 0.5,
                        image_names: Mapping[ImageId, str] | None = None,
                        label_names: Sequence[str] = ()) -> Comparison:
    """Per-image and per-(image, class) rows of the optimized-vs-parent comparison, in image id order (classes
    by label), and the totals. Images missing on one side count as empty there."""
    image_names = image_names or {}
    rows: list[ImageComparison] = []
    class_rows: list[ClassComparison] = []
    empty = Detections.empty()
    for image_id in _sorted_ids(list(parent) + list(optimized)):
        a = optimized.get(image_id, empty).above(reference_threshold)
        b = parent.get(image_id, empty).above(reference_threshold)
        matched = match_predictions(a, b, iou_threshold) >= 0
        name = str(image_names.get(image_id, image_id))
        rows.append(ImageComparison(image_id, name, len(a), len(b), int(matched.sum())))
        for label in np.union1d(a.labels, b.labels).tolist():
            in_a = a.labels == label
            count_a, count_b = int(in_a.sum()), int((b.labels == label).sum())
            matches = int(matched[in_a].sum())
            class_rows.append(ClassComparison(
                image_id, name, int(label), label_names[label] if 0 <= label < len(label_names) else str(label),
                count_a, count_b, matches, matches / count_a if count_a else 0.0))
    total_a = sum(r.a for r in rows)
    total_b = sum(r.b for r in rows)
    total_m = sum(r.matches for r in rows)
    totals = ComparisonTotals(
        a=total_a, b=total_b, matches=total_m,
        f1=2 * total_m / (total_a + total_b) if total_a + total_b else 1.0,
        precision=total_m / total_a if total_a else 1.0,
        recall=total_m / total_b if total_b else 1.0,
        images=len(rows), images_differing=sum(1 for r in rows if _differs(r)))
    return Comparison(rows, class_rows, totals, reference_threshold, iou_threshold)


def _differs(row) -> bool:
    return row.a != row.b or row.matches < min(row.a, row.b)


@dataclass(frozen=True)
class RowPage:
    rows: list
    next_page_token: str  # "" on the last page
    total_size: int  # rows after filtering


def query_rows(rows: Sequence, *, order_by: str = "", only_differences: bool = False, class_name: str | None = None,
               page_size: int = 0, page_token: str = "") -> RowPage:
    """Sort, filter and page comparison rows (ImageComparison or ClassComparison).

    order_by: comma-separated column names, each with "-" in front for descending ("-matches,image_name");
    ties keep the stored order. only_differences: rows with a != b or matches < min(a, b). class_name: rows of
    that class (case-insensitive; per-class rows only). page_size: 0 for DEFAULT_PAGE_SIZE, at most
    MAX_PAGE_SIZE. page_token: the next_page_token of the previous page of the same query."""
    columns = _columns(rows)
    keys = []
    for part in (p.strip() for p in order_by.split(",")):
        if not part:
            continue
        descending = part.startswith("-")
        name = part[1:].strip() if descending else part
        if name not in columns:
            raise InvalidArgument(f"cannot sort by {name!r}; the columns are {', '.join(columns)}", field="order_by")
        keys.append((name, descending))
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if class_name is not None and "class_name" not in columns:
        raise InvalidArgument("class_name filters per-class rows; these rows have no class", field="class_name")
    query = hashlib.sha256(json.dumps([order_by, only_differences, class_name]).encode()).hexdigest()[:16]
    offset = _read_token(page_token, query)

    selected = [r for r in rows if (not only_differences or _differs(r))
                and (class_name is None or r.class_name.casefold() == class_name.casefold())]
    for name, descending in reversed(keys):  # stable sorts, last key first
        selected.sort(key=lambda r, n=name: _sort_key(getattr(r, n)), reverse=descending)
    page = selected[offset:offset + size]
    end = offset + len(page)
    token = _make_token(end, query) if end < len(selected) else ""
    return RowPage(page, token, len(selected))


def _columns(rows: Sequence) -> list[str]:
    kinds = {type(r) for r in rows} or {ImageComparison}
    names: list[str] = []
    for kind in kinds:
        for f in dataclasses.fields(kind):
            if f.name not in names:
                names.append(f.name)
    return names


def _sort_key(value):
    if isinstance(value, str):
        return (1, value.casefold(), value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return (0, float(value), "")
    return (2, str(value), "")


def _make_token(offset: int, query: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "q": query}).encode()).decode().rstrip("=")


def _read_token(token: str, query: str) -> int:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, made_for = int(data["o"]), data["q"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token is not one this listing gave", field="page_token") from None
    if made_for != query or offset < 0:
        raise InvalidArgument("page_token belongs to a listing with other order_by or filters", field="page_token")
    return offset
