"""AccuracyService: datasets into their canonical stored form, previews, evaluations, comparisons, pictures."""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc

from services.accuracy import evaluation
from services.accuracy.datasets import normalize_dataset, render_preview
from services.common.dataset_files import ANNOTATIONS, MANIFEST
from services.common.errors import InvalidArgument
from services.common.object_store import ObjectStore, validate_prefix
from services.common.pb import ref_from_pb, ref_to_pb
from services.common.progress import Report, run_reporting
from services.common.provenance import dataset_inputs, model_inputs, provenance
from services.common.settings import Settings
from workbench.v1 import accuracy_pb2, accuracy_pb2_grpc, common_pb2

SERVICE_NAME = accuracy_pb2.DESCRIPTOR.services_by_name["AccuracyService"].full_name
UPLOAD_THREADS = 4



def summary_to_pb(summary: dict) -> common_pb2.DatasetSummary:
    values = dict(summary)
    values["format"] = common_pb2.DatasetFormat.Value(f"DATASET_FORMAT_{values['format']}")
    values["classes"] = [common_pb2.ClassStats(**c) for c in values.get("classes", [])]
    return common_pb2.DatasetSummary(**values)


class AccuracyServicer(accuracy_pb2_grpc.AccuracyServiceServicer):
    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store

    def NormalizeDataset(self, request: accuracy_pb2.NormalizeDatasetRequest, context: grpc.ServicerContext):
        if not request.sources:
            raise InvalidArgument("sources must list the uploaded dataset files", field="sources")
        if not request.output_prefix.endswith("/"):
            raise InvalidArgument("output_prefix must end with '/'", field="output_prefix")
        validate_prefix(request.output_prefix, field="output_prefix")
        bucket = request.output_bucket or self.settings.bucket
        fmt = common_pb2.DatasetFormat.Name(request.format).removeprefix("DATASET_FORMAT_")
        sources = [ref_from_pb(s, f"sources[{i}]") for i, s in enumerate(request.sources)]
        names = list(request.file_names) or [s.key.rsplit("/", 1)[-1] for s in sources]
        if len(names) != len(sources):
            raise InvalidArgument("file_names must name every source", field="file_names")

        def work(report: Report) -> common_pb2.DatasetArtifact:
            return self._normalize(sources, names, "" if fmt == "UNSPECIFIED" else fmt, bucket,
                                   request.output_prefix, report)

        artifact = yield from run_reporting(work, lambda p: accuracy_pb2.NormalizeDatasetResponse(progress=p))
        yield accuracy_pb2.NormalizeDatasetResponse(dataset=artifact)

    def _normalize(self, sources, names, fmt, bucket, prefix, report: Report) -> common_pb2.DatasetArtifact:
        with tempfile.TemporaryDirectory(prefix="dataset-") as tmp, ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            work = Path(tmp)
            local = []
            for i, (ref, name) in enumerate(zip(sources, names)):
                report("download", i / len(sources), name)
                path = work / "sources" / f"{i:04d}{''.join(Path(name).suffixes[-2:]).lower()[:16]}"
                path.parent.mkdir(parents=True, exist_ok=True)
                self.store.get_file(ref.bucket, ref.key, path, expected_sha256=ref.sha256 or None)
                local.append(path)
            staging = work / "staging"
            staging.mkdir()
            uploads: list[Future] = []

            def store_image(path: Path, file_name: str) -> None:
                # A hard link keeps the file for the upload thread whatever the reader does with it.
                staged = staging / file_name
                os.link(path, staged)
                uploads.append(pool.submit(self._upload_image, bucket, f"{prefix}images/{file_name}", staged))

            try:
                dataset = normalize_dataset(local, names, fmt, work / "extract", store_image, report)
                for future in uploads:
                    future.result()
                report("publish", 0.98, f"{len(dataset.images)} images stored")
                annotations = None
                if dataset.annotations is not None:
                    annotations = self.store.put_bytes(bucket, prefix + ANNOTATIONS,
                                                       json.dumps(dataset.annotations).encode())
                # The manifest goes last: a dataset prefix without one is an unfinished import.
                manifest = self.store.put_bytes(bucket, prefix + MANIFEST, json.dumps(dataset.manifest()).encode())
            except BaseException:
                for future in uploads:
                    future.cancel()
                pool.shutdown(wait=True)
                self.store.delete_prefix(bucket, prefix)  # a failed import leaves no partial dataset
                raise
        artifact = common_pb2.DatasetArtifact(bucket=bucket, prefix=prefix, manifest=ref_to_pb(manifest),
                                              summary=summary_to_pb(dataset.summary()))
        if annotations is not None:
            artifact.annotations.CopyFrom(ref_to_pb(annotations))
        return artifact

    def _upload_image(self, bucket: str, key: str, path: Path) -> None:
        self.store.put_file(bucket, key, path)
        path.unlink()

    def RenderDatasetPreview(self, request: accuracy_pb2.RenderDatasetPreviewRequest, context):
        dataset = request.dataset
        validate_prefix(dataset.prefix, field="dataset.prefix")
        manifest = self.store.get_json(dataset.bucket, dataset.prefix + MANIFEST)
        annotations = (self.store.get_json(dataset.bucket, dataset.prefix + ANNOTATIONS, max_bytes=512 * 1024 * 1024)
                       if dataset.HasField("annotations") else None)
        count = min(request.max_images or 6, 24, len(manifest["images"]))
        with tempfile.TemporaryDirectory(prefix="preview-") as tmp:
            paths = {}
            for entry in manifest["images"][:count]:
                path = Path(tmp) / entry["file_name"]
                self.store.get_file(dataset.bucket, f"{dataset.prefix}images/{entry['file_name']}", path,
                                    expected_sha256=entry.get("sha256") or None)
                paths[entry["id"]] = path
            png = render_preview(manifest, annotations, paths)
        bucket = request.output_bucket or dataset.bucket
        ref = self.store.put_bytes(bucket, f"{dataset.prefix}previews/preview-{count}.png", png)
        return accuracy_pb2.RenderDatasetPreviewResponse(png=ref_to_pb(ref))


    # -- evaluation ------------------------------------------------------------------------

    def Evaluate(self, request: accuracy_pb2.EvaluateRequest, context):
        if not request.output_prefix.endswith("/"):
            raise InvalidArgument("output_prefix must end with '/'", field="output_prefix")
        validate_prefix(request.output_prefix, field="output_prefix")
        bucket = request.output_bucket or self.settings.bucket

        def work(report: Report) -> accuracy_pb2.EvaluationResult:
            made = provenance("accuracy", {**model_inputs(request.model), **dataset_inputs(request.dataset),
                                           "parent_predictions": request.parent_predictions}, request.settings)
            with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
                result = evaluation.run(self.store, request, bucket, Path(tmp), report)
            result.provenance.CopyFrom(made)
            return result

        result = yield from run_reporting(work, lambda p: accuracy_pb2.EvaluateResponse(progress=p))
        yield accuracy_pb2.EvaluateResponse(result=result)

    def ListComparisonRows(self, request: accuracy_pb2.ListComparisonRowsRequest, context):
        return evaluation.list_rows(self.store, request)

    def RenderImage(self, request: accuracy_pb2.RenderImageRequest, context):
        bucket = request.output_bucket or request.dataset.bucket
        with tempfile.TemporaryDirectory(prefix="render-") as tmp:
            return accuracy_pb2.RenderImageResponse(
                png=ref_to_pb(evaluation.render(self.store, request, bucket, Path(tmp))))


def registrar(settings: Settings):
    def register(server: grpc.Server) -> list[str]:
        accuracy_pb2_grpc.add_AccuracyServiceServicer_to_server(
            AccuracyServicer(settings, ObjectStore.from_settings(settings)), server)
        return [SERVICE_NAME]

    return register
