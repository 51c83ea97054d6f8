"""Model import: uploaded files -> converter -> a Model record with its IR and analysis."""

from __future__ import annotations

from workbench_runtime.errors import InvalidArgument
from services.gateway.jobs import JobContext, JobManager, now
from services.gateway.projects import Catalog, validate_name
from services.gateway.records import derived_id
from services.gateway.uploads import Uploads
from services.gateway.workers import Workers, follow
from workbench.v1 import common_pb2, converter_pb2, gateway_pb2

KIND = common_pb2.JOB_KIND_IMPORT_MODEL


class ModelImports:
    def __init__(self, catalog: Catalog, uploads: Uploads, jobs: JobManager, workers: Workers, bucket: str):
        self.catalog, self.uploads, self.jobs = catalog, uploads, jobs
        self.workers, self.bucket = workers, bucket
        jobs.register(KIND, gateway_pb2.ImportModelRequest, self._run)

    def start(self, request: gateway_pb2.ImportModelRequest) -> common_pb2.Job:
        validate_name(request.name)
        if not request.files:
            raise InvalidArgument("files must list the model's uploads", field="files")
        existing = self.jobs.for_request(KIND, request.request_id)
        if existing:
            return existing
        self._convert_request(request)
        return self.jobs.submit(KIND, request, request_id=request.request_id)

    def _convert_request(self, request: gateway_pb2.ImportModelRequest) -> converter_pb2.ConvertModelRequest:
        files = []
        for i, item in enumerate(request.files):
            upload = self.uploads.ready(item.upload_id, f"files[{i}].upload_id")
            files.append(common_pb2.ModelFile(role=item.role, object=upload.object, file_name=upload.file_name))
        return converter_pb2.ConvertModelRequest(
            framework=request.framework, files=files, options=request.options, output_bucket=self.bucket)

    def _run(self, ctx: JobContext, request: gateway_pb2.ImportModelRequest) -> common_pb2.JobOutput:
        convert = self._convert_request(request)
        artifact = follow(ctx, "converter", self.workers.converter.ConvertModel, convert)
        model = gateway_pb2.Model(id=derived_id("mdl", ctx.job.id), name=validate_name(request.name),
                                  framework=artifact.source_framework, artifact=artifact, create_time=now())
        ctx.on_success(lambda tx: self.catalog.models.insert(model, tx))
        return common_pb2.JobOutput(model_id=model.id)
