"""AccuracyService: datasets into their canonical stored form, previews, evaluations, comparisons, pictures.

A thin translator: each method turns its request into plain Python values, makes one call into the domain
(publish, preview, evaluation_runs, report_views) and turns the answer into its response.
"""

from __future__ import annotations

import grpc

from services.accuracy.evaluation_runs import EvaluationJob, EvaluationOutcome, EvaluationSettings, run_evaluation
from services.accuracy.preview import store_preview
from services.accuracy.publish import DatasetUpload, PublishedDataset, publish_dataset
from services.accuracy.report_views import comparison_page, render_image
from services.common.dataset_files import StoredDataset
from workbench_runtime.errors import InvalidArgument
from services.common.metrics import RowPage
from services.common.object_store import ObjectRef, ObjectStore, validate_prefix
from services.common.pb import ir_from_pb, ref_from_pb, ref_to_pb
from services.common.progress import Report, run_reporting
from services.common.provenance import dataset_inputs, model_inputs, provenance
from services.common.settings import Settings
from workbench.v1 import accuracy_pb2, accuracy_pb2_grpc, common_pb2

SERVICE_NAME = accuracy_pb2.DESCRIPTOR.services_by_name["AccuracyService"].full_name
_BOX_SOURCES = {accuracy_pb2.BOX_SOURCE_PARENT: "parent", accuracy_pb2.BOX_SOURCE_OPTIMIZED: "optimized",
                accuracy_pb2.BOX_SOURCE_ANNOTATIONS: "annotations"}


def summary_to_pb(summary: dict) -> common_pb2.DatasetSummary:
    values = dict(summary)
    values["format"] = common_pb2.DatasetFormat.Value(f"DATASET_FORMAT_{values['format']}")
    values["classes"] = [common_pb2.ClassStats(**c) for c in values.get("classes", [])]
    return common_pb2.DatasetSummary(**values)


def output_prefix(prefix: str) -> str:
    if not prefix.endswith("/"):
        raise InvalidArgument("output_prefix must end with '/'", field="output_prefix")
    validate_prefix(prefix, field="output_prefix")
    return prefix


def upload_from_pb(request: accuracy_pb2.NormalizeDatasetRequest, default_bucket: str) -> DatasetUpload:
    if not request.sources:
        raise InvalidArgument("sources must list the uploaded dataset files", field="sources")
    prefix = output_prefix(request.output_prefix)
    bucket = request.output_bucket or default_bucket
    fmt = common_pb2.DatasetFormat.Name(request.format).removeprefix("DATASET_FORMAT_")
    sources = [ref_from_pb(s, f"sources[{i}]") for i, s in enumerate(request.sources)]
    names = list(request.file_names) or [s.key.rsplit("/", 1)[-1] for s in sources]
    if len(names) != len(sources):
        raise InvalidArgument("file_names must name every source", field="file_names")
    return DatasetUpload(sources, names, "" if fmt == "UNSPECIFIED" else fmt, bucket, prefix)


def published_to_pb(published: PublishedDataset) -> common_pb2.DatasetArtifact:
    artifact = common_pb2.DatasetArtifact(bucket=published.bucket, prefix=published.prefix,
                                          manifest=ref_to_pb(published.manifest),
                                          summary=summary_to_pb(published.summary))
    if published.annotations is not None:
        artifact.annotations.CopyFrom(ref_to_pb(published.annotations))
    return artifact


def evaluation_from_pb(request: accuracy_pb2.EvaluateRequest, bucket: str) -> EvaluationJob:
    settings = request.settings
    return EvaluationJob(
        model=ir_from_pb(request.model), quantized=request.model.analysis.quantized,
        dataset=StoredDataset(request.dataset.bucket, request.dataset.prefix),
        settings=EvaluationSettings(
            max_detections=settings.max_detections, resize_mode=settings.resize_mode,
            nms_iou=settings.nms_iou if settings.HasField("nms_iou") else None,
            reference_threshold=settings.reference_threshold if settings.HasField("reference_threshold") else None),
        compute_map=request.compute_map,
        parent_predictions=(ref_from_pb(request.parent_predictions, "parent_predictions")
                            if request.HasField("parent_predictions") else None),
        bucket=bucket, prefix=request.output_prefix)


def outcome_to_pb(outcome: EvaluationOutcome, settings: accuracy_pb2.AccuracySettings) -> accuracy_pb2.EvaluationResult:
    result = accuracy_pb2.EvaluationResult(predictions=ref_to_pb(outcome.predictions))
    effective = outcome.effective
    result.effective_settings.CopyFrom(settings)
    result.effective_settings.confidence_threshold = effective.confidence_threshold
    result.effective_settings.reference_threshold = effective.reference_threshold
    result.effective_settings.max_detections = effective.max_detections
    result.effective_settings.resize_mode = effective.resize_mode
    if outcome.map is not None:
        metrics, mapping = outcome.map.metrics, outcome.map.mapping
        result.metrics.CopyFrom(accuracy_pb2.CocoMetrics(ap=metrics.ap, ap50=metrics.ap50, ap75=metrics.ap75,
                                                         ar100=metrics.ar100, ap_per_class=outcome.map.ap_per_class))
        result.label_mapping.CopyFrom(accuracy_pb2.LabelMapping(
            model_to_dataset=mapping.model_to_dataset, unmatched_model_labels=mapping.unmatched_model_labels,
            unmatched_dataset_classes=mapping.unmatched_dataset_classes))
    if outcome.comparison is not None:
        totals = outcome.comparison.totals
        result.comparison.CopyFrom(accuracy_pb2.ComparisonSummary(
            images=totals.images, total_a=totals.a, total_b=totals.b, matches=totals.matches, f1=totals.f1,
            parent_agreement=outcome.comparison.parent_agreement,
            reference_threshold=outcome.comparison.reference_threshold))
        result.comparison_rows.CopyFrom(ref_to_pb(outcome.comparison.rows))
    result.images_per_second = outcome.images_per_second
    return result


def stored_order_by(order_by: str) -> str:
    """ComparisonRow calls the image name "image"; the stored rows call it image_name."""
    return ",".join(("-" if part.strip().startswith("-") else "") + (
        "image_name" if part.strip().lstrip("-") == "image" else part.strip().lstrip("-"))
        for part in order_by.split(",") if part.strip())


def rows_to_pb(page: RowPage, per_class: bool) -> accuracy_pb2.ListComparisonRowsResponse:
    return accuracy_pb2.ListComparisonRowsResponse(
        rows=[accuracy_pb2.ComparisonRow(
            image=r.image_name, image_id=int(r.image_id), a=r.a, b=r.b, matches=r.matches,
            class_name=getattr(r, "class_name", ""), precision=getattr(r, "precision", 0.0),
            has_precision=per_class and r.a > 0)  # matches / a means nothing where a == 0
            for r in page.rows],
        next_page_token=page.next_page_token, total_size=page.total_size)


def _ref_or_none(ref: common_pb2.ObjectRef) -> ObjectRef | None:
    return ObjectRef(ref.bucket, ref.key, ref.size, ref.sha256) if ref.key else None


class AccuracyServicer(accuracy_pb2_grpc.AccuracyServiceServicer):
    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store

    def NormalizeDataset(self, request: accuracy_pb2.NormalizeDatasetRequest, context: grpc.ServicerContext):
        upload = upload_from_pb(request, self.settings.bucket)
        published = yield from run_reporting(lambda report: publish_dataset(self.store, upload, report),
                                             lambda p: accuracy_pb2.NormalizeDatasetResponse(progress=p))
        yield accuracy_pb2.NormalizeDatasetResponse(dataset=published_to_pb(published))

    def RenderDatasetPreview(self, request: accuracy_pb2.RenderDatasetPreviewRequest, context):
        dataset = request.dataset
        png = store_preview(self.store, dataset.bucket, dataset.prefix, has_annotations=dataset.HasField("annotations"),
                            max_images=request.max_images, output_bucket=request.output_bucket)
        return accuracy_pb2.RenderDatasetPreviewResponse(png=ref_to_pb(png))

    # -- evaluation ------------------------------------------------------------------------

    def Evaluate(self, request: accuracy_pb2.EvaluateRequest, context):
        output_prefix(request.output_prefix)
        bucket = request.output_bucket or self.settings.bucket

        def work(report: Report) -> accuracy_pb2.EvaluationResult:
            made = provenance("accuracy", {**model_inputs(request.model), **dataset_inputs(request.dataset),
                                           "parent_predictions": request.parent_predictions}, request.settings)
            result = outcome_to_pb(run_evaluation(self.store, evaluation_from_pb(request, bucket), report),
                                   request.settings)
            result.provenance.CopyFrom(made)
            return result

        result = yield from run_reporting(work, lambda p: accuracy_pb2.EvaluateResponse(progress=p))
        yield accuracy_pb2.EvaluateResponse(result=result)

    def ListComparisonRows(self, request: accuracy_pb2.ListComparisonRowsRequest, context):
        per_class = request.mode == accuracy_pb2.COMPARISON_MODE_ADVANCED
        page = comparison_page(
            self.store, ref_from_pb(request.comparison_rows, "comparison_rows"), per_class=per_class,
            order_by=stored_order_by(request.order_by), only_differences=request.only_differences,
            class_name=request.class_name or None, page_size=request.page_size, page_token=request.page_token)
        return rows_to_pb(page, per_class)

    def RenderImage(self, request: accuracy_pb2.RenderImageRequest, context):
        sides = [(_ref_or_none(ref), _BOX_SOURCES.get(source, ""))
                 for ref, source in ((request.first_predictions, request.first_source),
                                     (request.second_predictions, request.second_source))]
        png = render_image(self.store, StoredDataset(request.dataset.bucket, request.dataset.prefix),
                           request.image_id, sides, score_threshold=request.score_threshold,
                           bucket=request.output_bucket or request.dataset.bucket)
        return accuracy_pb2.RenderImageResponse(png=ref_to_pb(png))
