"""Dataset import: uploads -> accuracy service (validate, normalize, store) -> a Dataset record."""

from __future__ import annotations

from datetime import timedelta

from workbench_runtime.errors import FailedPrecondition, InvalidArgument
from services.common.object_store import ObjectStore
from services.gateway.jobs import JobContext, JobManager, now
from services.gateway.projects import Catalog, validate_name
from services.gateway.records import derived_id
from services.gateway.uploads import Uploads
from services.gateway.workers import Workers, call, follow
from workbench.v1 import accuracy_pb2, common_pb2, gateway_pb2

DOWNLOAD_EXPIRY = timedelta(hours=1)
KIND = common_pb2.JOB_KIND_IMPORT_DATASET


class Datasets:
    def __init__(self, catalog: Catalog, uploads: Uploads, jobs: JobManager, workers: Workers,
                 store: ObjectStore, bucket: str):
        self.catalog, self.uploads, self.jobs = catalog, uploads, jobs
        self.workers, self.store, self.bucket = workers, store, bucket
        jobs.register(KIND, gateway_pb2.ImportDatasetRequest, self._run)

    def start_import(self, request: gateway_pb2.ImportDatasetRequest) -> common_pb2.Job:
        validate_name(request.name)
        if not request.upload_ids:
            raise InvalidArgument("upload_ids must list the dataset's uploads", field="upload_ids")
        existing = self.jobs.for_request(KIND, request.request_id)
        if existing:
            return existing
        self._sources(request)
        return self.jobs.submit(KIND, request, request_id=request.request_id)

    def _sources(self, request: gateway_pb2.ImportDatasetRequest) -> list[gateway_pb2.Upload]:
        return [self.uploads.ready(upload_id, f"upload_ids[{i}]") for i, upload_id in enumerate(request.upload_ids)]

    def _run(self, ctx: JobContext, request: gateway_pb2.ImportDatasetRequest) -> common_pb2.JobOutput:
        uploads = self._sources(request)
        dataset_id = derived_id("dst", ctx.job.id)  # the same folder on every attempt of the job
        normalize = accuracy_pb2.NormalizeDatasetRequest(
            format=request.format, sources=[u.object for u in uploads], file_names=[u.file_name for u in uploads],
            output_bucket=self.bucket, output_prefix=f"datasets/{dataset_id}/",
        )
        artifact = follow(ctx, "accuracy", self.workers.accuracy.NormalizeDataset, normalize)
        dataset = gateway_pb2.Dataset(id=dataset_id, name=validate_name(request.name), artifact=artifact,
                                      create_time=now())
        ctx.on_success(lambda tx: self.catalog.datasets.insert(dataset, tx))
        return common_pb2.JobOutput(dataset_id=dataset_id)

    def delete(self, dataset_id: str) -> None:
        dataset = self.catalog.datasets.get(dataset_id, "dataset_id")
        users = self.catalog.projects.ids(dataset_id=dataset_id)
        if users:
            raise FailedPrecondition(f"dataset {dataset_id} is used by projects {', '.join(users)}",
                                     field="dataset_id")
        # the record first: a blob without a record is garbage, a record without its blobs is a broken dataset
        self.catalog.datasets.delete(dataset_id)
        self.store.delete_prefix(dataset.artifact.bucket, dataset.artifact.prefix)

    def preview(self, dataset_id: str, max_images: int, remaining_s: float | None = None
                ) -> gateway_pb2.PreviewDatasetResponse:
        if max_images < 0:
            raise InvalidArgument("max_images must not be negative", field="max_images")
        dataset = self.catalog.datasets.get(dataset_id, "dataset_id")
        request = accuracy_pb2.RenderDatasetPreviewRequest(dataset=dataset.artifact, max_images=max_images)
        png = call("accuracy", self.workers.accuracy.RenderDatasetPreview, request, remaining_s).png
        url = self.store.presigned_get(png.bucket, png.key, DOWNLOAD_EXPIRY)
        return gateway_pb2.PreviewDatasetResponse(png=png, download_url=url)
