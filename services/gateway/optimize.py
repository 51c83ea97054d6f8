"""INT8 optimization of a project: the quantizer's model becomes a child project of the parent."""

from __future__ import annotations

from services.common.errors import FailedPrecondition, InvalidArgument
from services.gateway.jobs import JobContext, JobManager, now
from services.gateway.projects import Catalog, validate_name
from services.gateway.workers import Workers, follow
from workbench.v1 import common_pb2, gateway_pb2, quantizer_pb2


class Optimizations:
    def __init__(self, catalog: Catalog, jobs: JobManager, workers: Workers, bucket: str):
        self.catalog, self.jobs, self.workers, self.bucket = catalog, jobs, workers, bucket

    def start(self, request: gateway_pb2.OptimizeProjectRequest) -> common_pb2.Job:
        validate_name(request.name, required=False)
        config = request.config
        if config.max_drop < 0 or (config.drop_type == quantizer_pb2.DROP_TYPE_ABSOLUTE and config.max_drop > 1):
            raise InvalidArgument("max_drop must be within 0..1", field="config.max_drop")
        if config.WhichOneof("subset") == "subset_fraction" and not 0 < config.subset_fraction <= 1:
            raise InvalidArgument("subset_fraction must be within (0, 1]", field="config.subset_fraction")
        existing = self.jobs.for_request(common_pb2.JOB_KIND_OPTIMIZE, request.request_id)
        if existing:
            return existing
        parent = self.catalog.projects.get(request.project_id, "project_id")
        if not parent.model_id or not parent.dataset_id:
            raise FailedPrecondition(f"project {parent.id} needs a model and a dataset to calibrate on",
                                     field="project_id")
        model = self.catalog.models.get(parent.model_id, "project.model_id")
        if model.artifact.analysis.quantized:
            raise FailedPrecondition(f"model {model.id} is already quantized", field="project_id")
        dataset = self.catalog.datasets.get(parent.dataset_id, "project.dataset_id")
        call = quantizer_pb2.QuantizeRequest(model=model.artifact, dataset=dataset.artifact, config=config,
                                             output_bucket=self.bucket)
        if request.calibration_dataset_id:
            calibration = self.catalog.datasets.get(request.calibration_dataset_id, "calibration_dataset_id")
            call.calibration_dataset.CopyFrom(calibration.artifact)
        name = request.name.strip() or f"{parent.name} INT8"

        def work(ctx: JobContext) -> common_pb2.JobOutput:
            result = follow(ctx, "quantizer", self.workers.quantizer.Quantize(call))
            ctx.check_cancelled()  # a cancel that raced the last message still leaves no child
            child_model = gateway_pb2.Model(id=self.catalog.models.new_id(), name=f"{model.name} INT8",
                                            framework=model.framework, artifact=result.model, create_time=now())
            self.catalog.models.put(child_model)
            child = gateway_pb2.Project(
                id=self.catalog.projects.new_id(), name=name, model_id=child_model.id, dataset_id=parent.dataset_id,
                device=parent.device, parent_id=parent.id, create_time=now(),
                optimization=gateway_pb2.Optimization(result=result, job_id=ctx.job.id),
            )
            if parent.HasField("accuracy_settings"):
                child.accuracy_settings.CopyFrom(parent.accuracy_settings)
            self.catalog.projects.put(child)
            return common_pb2.JobOutput(project_id=child.id, model_id=child_model.id)

        return self.jobs.submit(common_pb2.JOB_KIND_OPTIMIZE, work, project_id=parent.id,
                                request_id=request.request_id)
