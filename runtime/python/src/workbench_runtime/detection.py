"""Detector outputs to boxes: YOLO head decoding, per-class NMS, and the per-image `Detections` every step shares.

The accuracy service and the quantizer's AccuracyAware loop both decode with this module, so an optimized
model is judged by exactly the decoding its parent is.

Formats (`Decoder.from_model` picks one from the model's model_info and output shapes):

- YOLO v2/v3/v4/tiny raw heads ([1, A*(coords+1+classes), H, W] per output, as services.converter.darknet
  builds them), decoded as Darknet does. [yolo]: x, y, objectness and class scores through the logistic
  (unless new_coords=1, whose heads are activated already), centre x = (sigmoid(tx)*scale_x_y - (scale_x_y-1)/2
  + cell_x) / grid_w, width = exp(tw) * anchor_w / input_w (new_coords: tw^2 * 4 * anchor_w / input_w).
  [region] (YOLOv2): centre x = (cell_x + sigmoid(tx)) / grid_w, width = exp(tw) * anchor_w / grid_w (anchors
  in grid cells), class scores through a softmax. score = objectness * class probability.
  multi_label=True (the default) keeps every class whose score passes the threshold, as Darknet's
  get_yolo_detections does; multi_label=False keeps each box's best class only, as OpenCV's DetectionModel does.
  Then NMS per class (IoU > iou_threshold suppresses, as Darknet and OpenCV) and the top max_detections.
- Ultralytics YOLO after its own box decoding, one output: [1, 4+C, A] (YOLOv5u/v8/v11: centre x, y, width,
  height in input pixels, then C class scores already through the logistic) or [1, A, 5+C] (YOLOv5, with an
  objectness: score = objectness * probability); then NMS per class. model_info's model_type (YOLOv8, YOLOv5)
  names the layout; without it the shape does, the A predictions outnumbering the values of one.
- SSD-style DetectionOutput [1, 1, N, 7]: image_id, label, confidence, x1, y1, x2, y2 in 0..1 of the input;
  rows from the first negative image_id on are padding. Labels are kept as the model numbers them.
- Plain box outputs [N, 6] / [1, N, 6]: x1, y1, x2, y2, score, label; [N, 7] / [1, N, 7]: batch index first,
  then the same six. Coordinates in input pixels. Already after NMS: only the threshold and the cap apply.

Boxes come back in original-image pixels (the preprocessing's Transform undone), x1, y1, x2, y2, sorted by
descending score; clipped to the image when its size is given (Darknet clips when it writes COCO results).

Predictions with a non-finite value (a NaN or infinite objectness, box or class score: an overflowing model,
exp of a huge logit) are dropped before NMS, never passed on as boxes; each decode that drops some logs a
warning with the count, and `Decoder.nonfinite_dropped` adds them up over the decoder's life.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from workbench_runtime.errors import FailedPrecondition, InvalidArgument
from workbench_runtime.model_info import (DEFAULT_CONFIDENCE_THRESHOLD, DEFAULT_IOU_THRESHOLD, YoloModelInfo,
                                        YoloOutput, model_info_strings, parse_model_info)
from workbench_runtime.preprocess import Transform

DEFAULT_MAX_DETECTIONS = 100  # COCO's maxDets

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Detections:
    """One image's detections: boxes [N, 4] x1, y1, x2, y2 float32 (original pixels), scores [N] float32,
    labels [N] int64 model label indices."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        return (np.array_equal(self.boxes, other.boxes) and np.array_equal(self.scores, other.scores)
                and np.array_equal(self.labels, other.labels))

    def take(self, index) -> "Detections":
        """The detections at an index array or boolean mask, in that order."""
        return Detections(self.boxes[index], self.scores[index], self.labels[index])

    def above(self, threshold: float) -> "Detections":
        """Those with score >= threshold."""
        return self.take(self.scores >= threshold)

    def sorted(self) -> "Detections":
        """By descending score; equal scores keep their order."""
        return self.take(np.argsort(-self.scores, kind="stable"))

    def clipped(self, width: float, height: float) -> "Detections":
        boxes = self.boxes.copy()
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        return Detections(boxes, self.scores, self.labels)

    def __repr__(self) -> str:
        return f"Detections({len(self)} boxes)"


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every x1, y1, x2, y2 box of a [N, 4] with every box of b [M, 4] -> [N, M] float64 (no +1 pixel)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


PRE_NMS_CANDIDATES = 50  # per detection kept


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
        max_detections: int = 0) -> np.ndarray:
    """Greedy NMS within each label: indices kept, by descending score (ties: lower index first).

    A box is suppressed by a higher-scored one of its label when their IoU exceeds iou_threshold. OpenCV's
    cv2.dnn.NMSBoxes does the work (float boxes, no +1 pixel); the labels are kept apart by shifting each
    label's boxes beyond every other's. max_detections > 0 keeps that many at most."""
    n = len(scores)
    if n == 0:
        return np.zeros(0, np.int64)
    if max_detections > 0 and n > PRE_NMS_CANDIDATES * max_detections:
        # Only the best candidates go into the quadratic suppression: a model whose every box scores
        # alike (untrained weights, a very low floor) would otherwise take minutes per image.
        top = np.argpartition(-np.asarray(scores, np.float32).reshape(-1), PRE_NMS_CANDIDATES * max_detections)
        top = np.sort(top[:PRE_NMS_CANDIDATES * max_detections])
        return top[nms(np.asarray(boxes).reshape(-1, 4)[top], np.asarray(scores).reshape(-1)[top],
                       np.asarray(labels).reshape(-1)[top], iou_threshold, max_detections)]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    low = boxes.min()
    span = boxes.max() - low + 1.0
    xywh = np.empty_like(boxes)
    offset = (labels - labels.min()) * span - low
    xywh[:, 0] = boxes[:, 0] + offset
    xywh[:, 1] = boxes[:, 1] + offset
    xywh[:, 2] = boxes[:, 2] - boxes[:, 0]
    xywh[:, 3] = boxes[:, 3] - boxes[:, 1]
    scores = np.asarray(scores, np.float32).reshape(-1)
    if scores.min() <= 0:  # OpenCV keeps scores above 0 only; a shift keeps the order
        scores = scores - scores.min() + np.float32(1)
    # (NMSBoxes' top_k caps the candidates before suppression, not the boxes kept: the cap is ours)
    kept = np.asarray(cv2.dnn.NMSBoxes(xywh, scores, 0.0, float(iou_threshold)), np.int64).reshape(-1)
    return kept[:max_detections] if max_detections > 0 else kept


@dataclass(frozen=True)
class DecodeSettings:
    confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD  # a score must exceed it
    iou_threshold: float = DEFAULT_IOU_THRESHOLD  # NMS: a larger IoU with a better box of its class suppresses
    max_detections: int = DEFAULT_MAX_DETECTIONS  # per image, over all classes; 0: no cap
    multi_label: bool = True  # every class above the threshold (Darknet) or the best class only (OpenCV)

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence_threshold < 1.0:
            raise InvalidArgument(f"confidence threshold {self.confidence_threshold} is not in [0, 1)",
                                  field="confidence_threshold")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise InvalidArgument(f"IoU threshold {self.iou_threshold} is not in (0, 1]", field="iou_threshold")
        if self.max_detections < 0:
            raise InvalidArgument("max detections must not be negative", field="max_detections")


class Decoder:
    """Raw outputs of one image ({output name: array}) -> Detections. Build one with Decoder.from_model."""

    output_names: tuple[str, ...] = ()
    settings: DecodeSettings
    nonfinite_dropped: int = 0  # predictions dropped for a non-finite value, over every call so far
    _count_lock = threading.Lock()

    def __call__(self, outputs: Mapping[str, np.ndarray], transform: Transform,
                 image_size: tuple[int, int] | None = None) -> Detections:
        """image_size: the original (width, height); boxes are clipped to it when given."""
        boxes, scores, labels, dropped = self._decode(outputs)
        if dropped:
            with self._count_lock:
                self.nonfinite_dropped += dropped
            log.warning("decoding dropped %d predictions with a non-finite value (NaN or infinite objectness, "
                        "box or score): the model's outputs overflow", dropped)
        top = np.argsort(-scores, kind="stable")
        if self.settings.max_detections:
            top = top[:self.settings.max_detections]
        found = Detections(transform.to_original(boxes[top]), scores[top], labels[top])
        return found.clipped(*image_size) if image_size is not None else found

    def _decode(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """[M, 4] boxes in input pixels, [M] scores, [M] labels (any order; the caller sorts and caps), all
        finite, and how many predictions were dropped for a non-finite value."""
        raise NotImplementedError

    @staticmethod
    def from_model(model, *, confidence_threshold: float | None = None, iou_threshold: float | None = None,
                   max_detections: int = DEFAULT_MAX_DETECTIONS, multi_label: bool = True) -> "Decoder":
        """The decoder of an openvino.Model's outputs; thresholds left None come from its model_info (Darknet's
        0.25 and 0.45 without one). FailedPrecondition when its outputs are no detection format known here."""
        strings = model_info_strings(model)
        settings = DecodeSettings(
            confidence_threshold=_setting(confidence_threshold, strings, "confidence_threshold",
                                          DEFAULT_CONFIDENCE_THRESHOLD),
            iou_threshold=_setting(iou_threshold, strings, "iou_threshold", DEFAULT_IOU_THRESHOLD),
            max_detections=max_detections, multi_label=multi_label)
        described = _describe_outputs(model)
        shapes = [shape for _, shape in described]
        if strings.get("output_names"):
            info = parse_model_info(strings)
            width, height = _input_size(model, info)
            present = {name for name, _ in described}
            missing = [o.name for o in info.outputs if o.name not in present]
            if missing:
                raise FailedPrecondition(f"model_info names outputs {missing} the model does not have "
                                         f"(it has {sorted(present)})", field="model", reason="MODEL_OUTPUTS")
            return YoloDecoder(info.outputs, width, height, settings)
        if len(described) == 1:
            name, shape = described[0]
            named = _ultralytics(name, shape, strings["model_type"], settings) if strings.get("model_type") else None
            if named is not None:
                return named
            if shape is not None and len(shape) == 4 and shape[:2] == [1, 1] and shape[3] == 7:
                width, height = _input_size(model, None)
                return DetectionOutputDecoder(name, width, height, settings)
            if shape is not None and 2 <= len(shape) <= 3 and shape[-1] in (6, 7) and \
                    (len(shape) == 2 or shape[0] == 1):
                return BoxesDecoder(name, settings, batch_index=shape[-1] == 7)
            guessed = _ultralytics(name, shape, "", settings)
            if guessed is not None:
                return guessed
            if shape is not None and _is_classification(shape):
                raise FailedPrecondition(
                    f"the model's output {_fmt(shape)} is a classification output, not detections",
                    field="model", reason="NOT_A_DETECTOR")
        raise FailedPrecondition(
            f"the model's outputs {', '.join(_fmt(s) for s in shapes)} are no detection format this service "
            "decodes (YOLO heads described by model_info, Ultralytics YOLO [1,4+C,A] or [1,A,5+C], DetectionOutput "
            "[1,1,N,7], boxes [N,6] or [N,7]); name the layout with model_type (YOLOv8, YOLOv5) in model_info",
            field="model", reason="NOT_A_DETECTOR")


class YoloDecoder(Decoder):
    def __init__(self, heads: Sequence[YoloOutput], input_width: int, input_height: int, settings: DecodeSettings):
        self.heads = tuple(heads)
        self.input_width, self.input_height = input_width, input_height
        self.settings = settings
        self.output_names = tuple(head.name for head in self.heads)
        self._grids: dict[tuple[str, int, int], tuple[np.ndarray, ...]] = {}

    @classmethod
    def from_info(cls, info: YoloModelInfo, settings: DecodeSettings | None = None) -> "YoloDecoder":
        return cls(info.outputs, info.input_width, info.input_height, settings or DecodeSettings())

    def _decode(self, outputs):
        # a huge logit overflows exp (inf) and inf - inf is NaN: such predictions are dropped, not warned about
        with np.errstate(over="ignore", invalid="ignore"):
            parts = [self._head(head, outputs[head.name]) for head in self.heads]
        boxes = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        labels = np.concatenate([p[2] for p in parts])
        if len(scores):
            kept = nms(boxes, scores, labels, self.settings.iou_threshold, self.settings.max_detections)
            boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
        return boxes, scores, labels, sum(p[3] for p in parts)

    def _head(self, head: YoloOutput, raw: np.ndarray):
        raw = np.asarray(raw)
        if raw.ndim == 4:
            if raw.shape[0] != 1:
                raise InvalidArgument(f"output {head.name} has batch {raw.shape[0]}; decode one image at a time",
                                      field="outputs")
            raw = raw[0]
        anchors = len(head.anchors)
        per_anchor = head.coords + 1 + head.classes
        if raw.ndim != 3 or raw.shape[0] != anchors * per_anchor:
            raise InvalidArgument(f"output {head.name} has shape {list(raw.shape)}; model_info expects "
                                  f"{anchors * per_anchor} channels ({anchors} anchors x "
                                  f"{per_anchor})", field="outputs")
        grid_h, grid_w = raw.shape[1:]
        x = raw.reshape(anchors, per_anchor, grid_h * grid_w)
        threshold = self.settings.confidence_threshold
        activated = head.kind == "yolo" and head.new_coords
        objectness = x[:, head.coords, :]
        if not activated:
            objectness = _sigmoid(objectness)
        # score = objectness * probability <= objectness: only cells whose objectness passes can score
        passing = objectness > threshold  # NaN never passes; +inf does, and is dropped below
        finite = np.isfinite(objectness)
        dropped = int(finite.size - np.count_nonzero(finite))
        if dropped:
            passing &= finite
        anchor_index, cell = np.nonzero(passing)
        if not len(cell):
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), dropped
        values = x[anchor_index, :, cell].astype(np.float32)  # [M, per_anchor]
        obj = objectness[anchor_index, cell]
        gx = (cell % grid_w).astype(np.float32)
        gy = (cell // grid_w).astype(np.float32)
        anchor = np.asarray(head.anchors, np.float32)[anchor_index]
        tx, ty, tw, th = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
        logits = values[:, head.coords + 1:]
        if head.kind == "yolo":
            s = np.float32(head.scale_x_y)
            if head.new_coords:
                cx = (tx * s - (s - 1) / 2 + gx) / grid_w
                cy = (ty * s - (s - 1) / 2 + gy) / grid_h
                w = tw * tw * 4 * anchor[:, 0] / self.input_width
                h = th * th * 4 * anchor[:, 1] / self.input_height
                probs = logits
            else:
                cx = (_sigmoid(tx) * s - (s - 1) / 2 + gx) / grid_w
                cy = (_sigmoid(ty) * s - (s - 1) / 2 + gy) / grid_h
                w = np.exp(tw) * anchor[:, 0] / self.input_width
                h = np.exp(th) * anchor[:, 1] / self.input_height
                probs = _sigmoid(logits)
        else:  # region: anchors in grid cells
            cx = (gx + _sigmoid(tx)) / grid_w
            cy = (gy + _sigmoid(ty)) / grid_h
            w = np.exp(tw) * anchor[:, 0] / grid_w
            h = np.exp(th) * anchor[:, 1] / grid_h
            probs = _softmax(logits) if head.softmax else _sigmoid(logits)
        scores = obj[:, None] * probs  # [M, classes]
        cx, cy = cx * self.input_width, cy * self.input_height
        half_w, half_h = w * (self.input_width / 2), h * (self.input_height / 2)
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)
        good = np.isfinite(boxes).all(axis=1) & np.isfinite(scores).all(axis=1)
        bad = len(good) - int(np.count_nonzero(good))
        if bad:
            boxes, scores, dropped = boxes[good], scores[good], dropped + bad
        row, score, label = _classes(scores, threshold, self.settings.multi_label)
        return boxes[row], score, label, dropped


class AnchorFreeDecoder(Decoder):
    """Ultralytics YOLO heads after their own box decoding, one output: [1, 4+C, A] (YOLOv5u/v8/v11: centre x, y,
    width, height in input pixels, then C class scores already through the logistic) or, with objectness,
    [1, A, 5+C] (YOLOv5: the same four, objectness, C class probabilities; score = objectness * probability)."""

    def __init__(self, output_name: str, classes: int, settings: DecodeSettings, *, objectness: bool = False):
        self.output_names = (output_name,)
        self.classes, self.objectness, self.settings = classes, objectness, settings

    def _decode(self, outputs):
        raw = np.asarray(outputs[self.output_names[0]], np.float32)
        width = 5 + self.classes if self.objectness else 4 + self.classes
        if raw.size % width or raw.ndim not in (2, 3) or (raw.ndim == 3 and raw.shape[0] != 1):
            raise InvalidArgument(f"output {self.output_names[0]} has shape {list(raw.shape)}; this YOLO layout "
                                  f"expects {width} values per prediction of one image", field="outputs")
        rows = raw.reshape(-1, width) if self.objectness else raw.reshape(width, -1).T
        rows, dropped = _finite_rows(rows)
        scores = rows[:, 5:] * rows[:, 4:5] if self.objectness else rows[:, 4:]
        row, score, label = _classes(scores, self.settings.confidence_threshold, self.settings.multi_label)
        cx, cy, w, h = (rows[row, i] for i in range(4))
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
        if len(score):
            kept = nms(boxes, score, label, self.settings.iou_threshold, self.settings.max_detections)
            boxes, score, label = boxes[kept], score[kept], label[kept]
        return boxes, score, label, dropped


class DetectionOutputDecoder(Decoder):
    """[1, 1, N, 7]: image_id, label, confidence, x1, y1, x2, y2 normalized to the input."""

    def __init__(self, output_name: str, input_width: int, input_height: int, settings: DecodeSettings):
        self.output_names = (output_name,)
        self.input_width, self.input_height = input_width, input_height
        self.settings = settings

    def _decode(self, outputs):
        rows = np.asarray(outputs[self.output_names[0]], np.float32).reshape(-1, 7)
        padding = np.nonzero(rows[:, 0] < 0)[0]
        if len(padding):
            rows = rows[:padding[0]]
        rows, dropped = _finite_rows(rows[:, 1:7])
        rows = rows[rows[:, 1] > self.settings.confidence_threshold]
        boxes = rows[:, 2:6] * np.float32([self.input_width, self.input_height, self.input_width, self.input_height])
        return boxes, rows[:, 1].copy(), rows[:, 0].astype(np.int64), dropped


class BoxesDecoder(Decoder):
    """[N, 6]: x1, y1, x2, y2, score, label in input pixels; with batch_index, [N, 7] with the batch index first."""

    def __init__(self, output_name: str, settings: DecodeSettings, *, batch_index: bool = False):
        self.output_names = (output_name,)
        self.settings = settings
        self.batch_index = batch_index

    def _decode(self, outputs):
        width = 7 if self.batch_index else 6
        rows = np.asarray(outputs[self.output_names[0]], np.float32).reshape(-1, width)
        if self.batch_index:
            rows = rows[rows[:, 0] == 0, 1:]
        rows, dropped = _finite_rows(rows)
        rows = rows[rows[:, 4] > self.settings.confidence_threshold]
        return rows[:, :4].copy(), rows[:, 4].copy(), rows[:, 5].astype(np.int64), dropped


def _classes(scores: np.ndarray, threshold: float, multi_label: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[M, C] scores -> (row, score, label) of every class above the threshold (multi_label) or of each row's
    best class when it is above it."""
    if multi_label:
        row, label = np.nonzero(scores > threshold)
        score = scores[row, label]
    else:
        label = np.argmax(scores, axis=1) if len(scores) else np.zeros(0, np.int64)
        score = scores[np.arange(len(scores)), label]
        row = np.nonzero(score > threshold)[0]
        label, score = label[row], score[row]
    return row, score.astype(np.float32), label.astype(np.int64)


def _finite_rows(rows: np.ndarray) -> tuple[np.ndarray, int]:
    """The rows whose every value is finite, and how many were not."""
    good = np.isfinite(rows).all(axis=1)
    bad = len(good) - int(np.count_nonzero(good))
    return (rows[good] if bad else rows), bad


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) of a large negative x is inf: the logistic is 0, as it should be
        return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _setting(given: float | None, strings: Mapping[str, str], key: str, default: float) -> float:
    if given is not None:
        return float(given)
    try:
        return float(strings[key])
    except (KeyError, ValueError):
        return default


# model_info model_type values of Ultralytics layouts: [1, 4+C, A], and [1, A, 5+C] with objectness
ANCHOR_FREE_TYPES = ("YOLOv5u", "YOLOv8", "YOLOv9", "YOLOv11", "YOLO11")
OBJECTNESS_TYPES = ("YOLOv5",)


def _ultralytics(name: str, shape: list[int] | None, model_type: str, settings: DecodeSettings
                 ) -> "AnchorFreeDecoder | None":
    """An Ultralytics YOLO output [1, 4+C, A] or [1, A, 5+C]: by model_type when it names one, else (model_type "")
    by shape, where the A predictions outnumber the values of one (static, or A dynamic)."""
    if shape is None or len(shape) != 3 or shape[0] not in (1, -1):
        return None
    values_first, values_last = shape[1], shape[2]
    if model_type in ANCHOR_FREE_TYPES or (
            not model_type and values_first > 4 and (values_last == -1 or values_last > values_first)):
        return AnchorFreeDecoder(name, values_first - 4, settings) if values_first > 4 else None
    if model_type in OBJECTNESS_TYPES or (
            not model_type and values_last > 5 and (values_first == -1 or values_first > values_last)):
        return AnchorFreeDecoder(name, values_last - 5, settings, objectness=True) if values_last > 5 else None
    return None


def _describe_outputs(model) -> list[tuple[str, list[int] | None]]:
    described = []
    for port in model.outputs:
        names = port.get_names()
        if not names:
            raise FailedPrecondition("a model output has no name; decoding needs named outputs", field="model",
                                     reason="MODEL_OUTPUTS")
        shape = port.get_partial_shape()
        dims = [d.get_length() if d.is_static else -1 for d in shape] if shape.rank.is_static else None
        described.append((port.get_any_name(), dims))
    return described


def _input_size(model, info: YoloModelInfo | None) -> tuple[int, int]:
    shape = model.input(0).get_partial_shape()
    if shape.rank.is_static and shape.rank.get_length() == 4 and shape[2].is_static and shape[3].is_static:
        return shape[3].get_length(), shape[2].get_length()
    if info is not None and info.input_width and info.input_height:
        return info.input_width, info.input_height
    raise FailedPrecondition(f"the model's input {shape} has no static size to decode boxes against", field="model")


def _is_classification(shape: list[int]) -> bool:
    """[1, K], [1, K, 1, 1] or [K]: one score per class."""
    dims = [d for d in shape]
    if len(dims) == 4 and dims[2:] == [1, 1]:
        dims = dims[:2]
    return (len(dims) == 2 and dims[0] == 1 and dims[1] > 1) or (len(dims) == 1 and dims[0] > 1)


def _fmt(shape: list[int] | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ",".join("?" if d < 0 else str(d) for d in shape) + "]"
