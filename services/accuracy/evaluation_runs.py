"""One evaluation run over stored objects: a stored model on a stored dataset in; its stored predictions, the
COCO metrics and the comparison with a parent's stored predictions out.

The domain lives in services.accuracy.inference (the detector over the images), services.common.metrics
(mAP, the comparison, parent agreement); this module moves their inputs and outputs between object
storage and plain Python values (the servicer translates those to and from protobuf).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import openvino as ov

from services.accuracy.inference import evaluate, from_coco_results, to_coco_results
from services.common.tensor_cache import StoredImage, default_cache
from services.common.artifacts import StoredIR, download_ir
from services.common.dataset_files import StoredDataset
from workbench_runtime.detection import Decoder
from workbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.labels import LabelMapping, model_labels_from_info, require_label_mapping
from services.common.metrics import CocoMetrics, ComparisonTotals, coco_metrics, compare_predictions, \
    parent_agreement
from workbench_runtime.model_info import model_info_strings
from services.common.object_store import ObjectRef, ObjectStore
from workbench_runtime.preprocess import Preprocessing
from services.common.progress import Report

CONFIDENCE_FLOOR = 0.001  # predictions are stored down to here: mAP and agreement rank every box
DEFAULT_MAX_DETECTIONS = 100
PREDICTIONS, COMPARISON = "predictions.json", "comparison.json"
RESIZE_MODES = {"resize": "standard", "letterbox": "fit_to_window_letterbox"}


@dataclass(frozen=True)
class EvaluationSettings:
    """What the caller asks of the decoding and the comparison (workbench.v1.AccuracySettings); None or 0
    leaves the default. A requested confidence threshold is not used: predictions are kept down to
    CONFIDENCE_FLOOR."""

    max_detections: int = 0  # 0: DEFAULT_MAX_DETECTIONS
    nms_iou: float | None = None  # None: the model's own
    resize_mode: str = ""  # "resize" or "letterbox"; "": the model's own
    reference_threshold: float | None = None  # None: the model's confidence_threshold, else 0.25


@dataclass(frozen=True)
class EvaluationJob:
    model: StoredIR
    quantized: bool  # a quantized model runs in the device's default precision, others in f32
    dataset: StoredDataset
    settings: EvaluationSettings
    compute_map: bool
    parent_predictions: ObjectRef | None  # compare with these, when given
    bucket: str  # where the outputs go, under prefix (ends with "/")
    prefix: str


@dataclass(frozen=True)
class EffectiveSettings:
    confidence_threshold: float
    reference_threshold: float
    max_detections: int
    resize_mode: str  # "resize" or "letterbox"


@dataclass(frozen=True)
class MapResult:
    metrics: CocoMetrics
    ap_per_class: dict[str, float]  # class name -> AP@[.5:.95]
    mapping: LabelMapping


@dataclass(frozen=True)
class ParentComparison:
    totals: ComparisonTotals
    parent_agreement: float
    reference_threshold: float
    rows: ObjectRef  # the per-image and per-class rows, stored


@dataclass(frozen=True)
class EvaluationOutcome:
    predictions: ObjectRef
    effective: EffectiveSettings
    images_per_second: float
    map: MapResult | None = None  # when compute_map
    comparison: ParentComparison | None = None  # when parent_predictions


def identity(labels: list[str]) -> dict[int, int]:
    return {i: i for i in range(len(labels))}


def run_evaluation(store: ObjectStore, job: EvaluationJob, report: Report) -> EvaluationOutcome:
    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        return _run(store, job, Path(tmp), report)


def _run(store: ObjectStore, job: EvaluationJob, work: Path, report: Report) -> EvaluationOutcome:
    settings = job.settings
    xml = download_ir(store, job.model, work / "model")
    model = ov.Core().read_model(str(xml))
    info = model_info_strings(model)
    labels = model_labels_from_info(info)
    max_detections = settings.max_detections or DEFAULT_MAX_DETECTIONS
    decoder = Decoder.from_model(model, confidence_threshold=CONFIDENCE_FLOOR, max_detections=max_detections,
                                 iou_threshold=settings.nms_iou)
    preprocessing = Preprocessing.from_model(model)
    if settings.resize_mode:
        if settings.resize_mode not in RESIZE_MODES:
            raise InvalidArgument("resize_mode is resize or letterbox", field="settings.resize_mode")
        preprocessing = dataclasses.replace(preprocessing, resize_type=RESIZE_MODES[settings.resize_mode])
    reference = settings.reference_threshold if settings.reference_threshold is not None else \
        float(info.get("confidence_threshold", 0.25))

    dataset = job.dataset
    manifest = dataset.manifest(store)
    annotations = dataset.annotations(store)
    mapping = None
    if job.compute_map:
        if not annotations or not annotations.get("annotations"):
            raise FailedPrecondition("mAP needs a dataset with annotations; this one has none", field="dataset")
        mapping = require_label_mapping(labels, annotations["categories"])
    # images the tensor cache holds are never fetched; the rest are read from the store as they are evaluated
    paths = [(entry["id"], StoredImage(store, dataset.bucket, dataset.image_key(entry), entry["sha256"]))
             for entry in manifest["images"]]
    # The FP model is the reference, so it runs in f32 even where the device would pick bf16.
    precision = None if job.quantized else "f32"
    speed: dict = {}

    def note_speed(stage, fraction=None, message="", **metrics):
        speed.update(metrics)
        report(stage, fraction, message, **metrics)

    predictions = evaluate(model, paths, decoder, preprocessing, precision_hint=precision, report=note_speed,
                           cache=default_cache())

    prefix = job.prefix
    stored = store.put_bytes(job.bucket, prefix + PREDICTIONS, json.dumps(
        {"labels": labels, "results": to_coco_results(predictions, identity(labels))}).encode())
    effective = EffectiveSettings(
        confidence_threshold=CONFIDENCE_FLOOR, reference_threshold=reference, max_detections=max_detections,
        resize_mode="letterbox" if preprocessing.resize_type != "standard" else "resize")

    map_result = None
    if mapping is not None:
        report("metrics", 0.97, "COCO metrics")
        metrics = coco_metrics(annotations, to_coco_results(predictions, mapping))
        names = {c["id"]: c["name"] for c in annotations["categories"]}
        map_result = MapResult(metrics, {names.get(k, str(k)): v for k, v in metrics.per_class_ap.items()}, mapping)

    comparison = None
    if job.parent_predictions is not None:
        report("compare", 0.98, "comparing with the parent")
        parent = load_predictions(store, job.parent_predictions, [i for i, _ in paths])
        names = {entry["id"]: entry.get("original_name") or entry["file_name"] for entry in manifest["images"]}
        compared = compare_predictions(predictions, parent, reference_threshold=reference, image_names=names,
                                       label_names=labels)
        rows = store.put_bytes(job.bucket, prefix + COMPARISON, json.dumps({
            "images": [dataclasses.asdict(r) for r in compared.images],
            "classes": [dataclasses.asdict(r) for r in compared.classes]}).encode())
        comparison = ParentComparison(
            compared.totals, parent_agreement(predictions, parent, reference_threshold=reference), reference, rows)
    return EvaluationOutcome(stored, effective, speed.get("images_per_second", 0.0), map_result, comparison)


def load_predictions(store: ObjectStore, ref: ObjectRef, image_ids) -> dict:
    if not store.exists(ref.bucket, ref.key):
        raise NotFound(f"stored predictions {ref.key} are gone", field="parent_predictions")
    doc = store.get_json(ref.bucket, ref.key, max_bytes=1024**3)
    return from_coco_results(doc["results"], identity(doc["labels"]), image_ids)
