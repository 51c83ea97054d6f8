"""The accuracy service's evaluation RPCs: stored model and dataset in, stored predictions and reports out.

The domain lives in services.accuracy.evaluate (inference), services.common.metrics (mAP, the
comparison, parent agreement) and services.accuracy.render (pictures); this module moves their
inputs and outputs between object storage and protobuf.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import openvino as ov

from services.accuracy.evaluate import annotations_as_detections, evaluate, from_coco_results, to_coco_results
from services.accuracy.render import BLUE, GREEN, ORANGE, BoxSet, render_boxes
from services.common.artifacts import download_ir
from services.common.dataset_files import StoredDataset, download_images
from services.common.detection import Decoder
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.labels import model_labels_from_info, require_label_mapping
from services.common.metrics import ClassComparison, ImageComparison, coco_metrics, compare_predictions, \
    parent_agreement, query_rows
from services.common.model_info import model_info_strings
from services.common.object_store import ObjectRef, ObjectStore
from services.common.pb import ir_from_pb, ref_from_pb, ref_to_pb
from services.common.preprocess import Preprocessing
from services.common.progress import Report
from workbench.v1 import accuracy_pb2

CONFIDENCE_FLOOR = 0.001  # predictions are stored down to here: mAP and agreement rank every box
PREDICTIONS, COMPARISON = "predictions.json", "comparison.json"


def _identity(labels: list[str]) -> dict[int, int]:
    return {i: i for i in range(len(labels))}


def run(store: ObjectStore, request: accuracy_pb2.EvaluateRequest, bucket: str, work: Path,
        report: Report) -> accuracy_pb2.EvaluationResult:
    settings = request.settings
    xml = download_ir(store, ir_from_pb(request.model), work / "model")
    model = ov.Core().read_model(str(xml))
    info = model_info_strings(model)
    labels = model_labels_from_info(info)
    decoder = Decoder.from_model(
        model, confidence_threshold=CONFIDENCE_FLOOR, max_detections=settings.max_detections or 100,
        iou_threshold=settings.nms_iou if settings.HasField("nms_iou") else None)
    preprocessing = Preprocessing.from_model(model)
    if settings.resize_mode:
        modes = {"resize": "standard", "letterbox": "fit_to_window_letterbox"}
        if settings.resize_mode not in modes:
            raise InvalidArgument("resize_mode is resize or letterbox", field="settings.resize_mode")
        preprocessing = dataclasses.replace(preprocessing, resize_type=modes[settings.resize_mode])
    reference = settings.reference_threshold if settings.HasField("reference_threshold") else \
        float(info.get("confidence_threshold", 0.25))

    dataset = StoredDataset(request.dataset.bucket, request.dataset.prefix)
    manifest = dataset.manifest(store)
    annotations = dataset.annotations(store)
    mapping = None
    if request.compute_map:
        if not annotations or not annotations.get("annotations"):
            raise FailedPrecondition("mAP needs a dataset with annotations; this one has none", field="dataset")
        mapping = require_label_mapping(labels, annotations["categories"])
    report("download", 0.0, f"{len(manifest['images'])} images")
    paths = [(entry["id"], path) for entry, path in download_images(store, dataset, manifest["images"], work / "img")]
    # The FP model is the reference, so it runs in f32 even where the device would pick bf16.
    precision = None if request.model.analysis.quantized else "f32"
    speed: dict = {}

    def note_speed(stage, fraction=None, message="", **metrics):
        speed.update(metrics)
        report(stage, fraction, message, **metrics)

    predictions = evaluate(model, paths, decoder, preprocessing, precision_hint=precision, report=note_speed)

    prefix = request.output_prefix
    stored = store.put_bytes(bucket, prefix + PREDICTIONS, json.dumps(
        {"labels": labels, "results": to_coco_results(predictions, _identity(labels))}).encode())
    result = accuracy_pb2.EvaluationResult(predictions=ref_to_pb(stored))
    result.effective_settings.CopyFrom(settings)
    result.effective_settings.confidence_threshold = CONFIDENCE_FLOOR
    result.effective_settings.reference_threshold = reference
    result.effective_settings.max_detections = settings.max_detections or 100
    result.effective_settings.resize_mode = "letterbox" if preprocessing.resize_type != "standard" else "resize"

    if mapping is not None:
        report("metrics", 0.97, "COCO metrics")
        metrics = coco_metrics(annotations, to_coco_results(predictions, mapping))
        names = {c["id"]: c["name"] for c in annotations["categories"]}
        result.metrics.CopyFrom(accuracy_pb2.CocoMetrics(
            ap=metrics.ap, ap50=metrics.ap50, ap75=metrics.ap75, ar100=metrics.ar100,
            ap_per_class={names.get(k, str(k)): v for k, v in metrics.per_class_ap.items()}))
        result.label_mapping.CopyFrom(accuracy_pb2.LabelMapping(
            model_to_dataset=mapping.model_to_dataset, unmatched_model_labels=mapping.unmatched_model_labels,
            unmatched_dataset_classes=mapping.unmatched_dataset_classes))

    if request.HasField("parent_predictions"):
        report("compare", 0.98, "comparing with the parent")
        parent = load_predictions(store, ref_from_pb(request.parent_predictions, "parent_predictions"),
                                  [i for i, _ in paths])
        names = {entry["id"]: entry.get("original_name") or entry["file_name"] for entry in manifest["images"]}
        comparison = compare_predictions(predictions, parent, reference_threshold=reference, image_names=names,
                                         label_names=labels)
        rows = store.put_bytes(bucket, prefix + COMPARISON, json.dumps({
            "images": [dataclasses.asdict(r) for r in comparison.images],
            "classes": [dataclasses.asdict(r) for r in comparison.classes]}).encode())
        totals = comparison.totals
        result.comparison.CopyFrom(accuracy_pb2.ComparisonSummary(
            images=totals.images, total_a=totals.a, total_b=totals.b, matches=totals.matches, f1=totals.f1,
            parent_agreement=parent_agreement(predictions, parent, reference_threshold=reference),
            reference_threshold=reference))
        result.comparison_rows.CopyFrom(ref_to_pb(rows))
    result.images_per_second = speed.get("images_per_second", 0.0)
    return result


def load_predictions(store: ObjectStore, ref: ObjectRef, image_ids) -> dict:
    if not store.exists(ref.bucket, ref.key):
        raise NotFound(f"stored predictions {ref.key} are gone", field="parent_predictions")
    doc = store.get_json(ref.bucket, ref.key, max_bytes=1024**3)
    return from_coco_results(doc["results"], _identity(doc["labels"]), image_ids)


def list_rows(store: ObjectStore, request: accuracy_pb2.ListComparisonRowsRequest
              ) -> accuracy_pb2.ListComparisonRowsResponse:
    ref = ref_from_pb(request.comparison_rows, "comparison_rows")
    doc = store.get_json(ref.bucket, ref.key, max_bytes=1024**3)
    advanced = request.mode == accuracy_pb2.COMPARISON_MODE_ADVANCED
    rows = [ClassComparison(**r) for r in doc["classes"]] if advanced else [ImageComparison(**r) for r in doc["images"]]
    # ComparisonRow calls the image name "image"; the stored rows call it image_name
    order_by = ",".join(("-" if part.strip().startswith("-") else "") + (
        "image_name" if part.strip().lstrip("-") == "image" else part.strip().lstrip("-"))
        for part in request.order_by.split(",") if part.strip())
    page = query_rows(rows, order_by=order_by, only_differences=request.only_differences,
                      class_name=request.class_name or None, page_size=request.page_size,
                      page_token=request.page_token)
    return accuracy_pb2.ListComparisonRowsResponse(
        rows=[accuracy_pb2.ComparisonRow(
            image=r.image_name, image_id=int(r.image_id), a=r.a, b=r.b, matches=r.matches,
            class_name=getattr(r, "class_name", ""), precision=getattr(r, "precision", 0.0),
            has_precision=advanced and r.a > 0)  # matches / a means nothing where a == 0
            for r in page.rows],
        next_page_token=page.next_page_token, total_size=page.total_size)


_SOURCES = {accuracy_pb2.BOX_SOURCE_PARENT: ("parent model", BLUE),
            accuracy_pb2.BOX_SOURCE_OPTIMIZED: ("optimized model", ORANGE),
            accuracy_pb2.BOX_SOURCE_ANNOTATIONS: ("annotations", GREEN)}


def render(store: ObjectStore, request: accuracy_pb2.RenderImageRequest, bucket: str, work: Path) -> ObjectRef:
    dataset = StoredDataset(request.dataset.bucket, request.dataset.prefix)
    entry = next((e for e in dataset.manifest(store)["images"] if e["id"] == request.image_id), None)
    if entry is None:
        raise NotFound(f"the dataset has no image {request.image_id}", field="image_id")
    (_, path), = download_images(store, dataset, [entry], work)
    sides = [(ref, source) for ref, source in ((request.first_predictions, request.first_source),
                                               (request.second_predictions, request.second_source))
             if ref.key or source == accuracy_pb2.BOX_SOURCE_ANNOTATIONS]
    docs = {ref.key: store.get_json(ref.bucket, ref.key, max_bytes=1024**3) for ref, _ in sides if ref.key}
    labels = next((doc["labels"] for doc in docs.values()), [])
    sets = []
    for ref, source in sides:
        name, color = _SOURCES.get(source, ("predictions", ORANGE))
        if source == accuracy_pb2.BOX_SOURCE_ANNOTATIONS:
            annotations = dataset.annotations(store)
            if not annotations:
                raise FailedPrecondition("the dataset has no annotations to draw", field="against_annotations")
            mapping = require_label_mapping(labels, annotations["categories"])
            sets.append(BoxSet(name, annotations_as_detections(annotations, mapping)[request.image_id], color,
                               show_scores=False))
        else:
            doc = docs[ref.key]
            found = from_coco_results(doc["results"], _identity(doc["labels"]), [request.image_id])[request.image_id]
            sets.append(BoxSet(name, found.above(request.score_threshold or 0.25), color))
    png = render_boxes(path, sets, label_names=labels, title=entry.get("original_name") or entry["file_name"])
    # named by content: two different pictures of one image (other reports, other sets) never share a key
    digest = hashlib.sha256(png).hexdigest()[:16]
    return store.put_bytes(bucket, f"{request.dataset.prefix}renders/{request.image_id}-{digest}.png", png)
