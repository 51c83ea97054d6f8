"""INT8 optimization of a project: the quantizer's model becomes a child project of the parent."""

from __future__ import annotations

from workbench_runtime.errors import FailedPrecondition, InvalidArgument
from services.gateway.jobs import JobContext, JobManager, now
from services.gateway.projects import Catalog, validate_name
from services.gateway.records import derived_id
from services.gateway.workers import Workers, follow
from workbench.v1 import common_pb2, gateway_pb2, quantizer_pb2

KIND = common_pb2.JOB_KIND_OPTIMIZE


class Optimizations:
    def __init__(self, catalog: Catalog, jobs: JobManager, workers: Workers, bucket: str):
        self.catalog, self.jobs, self.workers, self.bucket = catalog, jobs, workers, bucket
        jobs.register(KIND, gateway_pb2.OptimizeProjectRequest, self._run)

    def start(self, request: gateway_pb2.OptimizeProjectRequest) -> common_pb2.Job:
        validate_name(request.name, required=False)
        config = request.config
        # either method: AccuracyAware restores within max_drop, Default's result is judged against it
        if config.max_drop < 0 or (config.drop_type != quantizer_pb2.DROP_TYPE_RELATIVE and config.max_drop > 1):
            raise InvalidArgument("max_drop must be within 0..1", field="config.max_drop")
        if config.WhichOneof("subset") == "subset_fraction" and not 0 < config.subset_fraction <= 1:
            raise InvalidArgument("subset_fraction must be within (0, 1]", field="config.subset_fraction")
        existing = self.jobs.for_request(KIND, request.request_id)
        if existing:
            return existing
        self._plan(request)
        return self.jobs.submit(KIND, request, project_id=request.project_id, request_id=request.request_id)

    def _plan(self, request: gateway_pb2.OptimizeProjectRequest):
        """The parent, its model and the quantizer's request; refuses what cannot be calibrated."""
        parent = self.catalog.projects.get(request.project_id, "project_id")
        if not parent.model_id or not parent.dataset_id:
            raise FailedPrecondition(f"project {parent.id} needs a model and a dataset to calibrate on",
                                     field="project_id")
        model = self.catalog.models.get(parent.model_id, "project.model_id")
        if model.artifact.analysis.quantized:
            raise FailedPrecondition(f"model {model.id} is already quantized", field="project_id")
        dataset = self.catalog.datasets.get(parent.dataset_id, "project.dataset_id")
        call = quantizer_pb2.QuantizeRequest(model=model.artifact, dataset=dataset.artifact, config=request.config,
                                             output_bucket=self.bucket)
        if request.calibration_dataset_id:
            calibration = self.catalog.datasets.get(request.calibration_dataset_id, "calibration_dataset_id")
            call.calibration_dataset.CopyFrom(calibration.artifact)
        return parent, model, call

    def _run(self, ctx: JobContext, request: gateway_pb2.OptimizeProjectRequest) -> common_pb2.JobOutput:
        parent, model, call = self._plan(request)
        result = ctx.step("quantize", quantizer_pb2.QuantizationResult,
                          lambda: follow(ctx, "quantizer", self.workers.quantizer.Quantize, call))
        result.provenance.job_id = ctx.job.id
        # ids from the job's: however often the job is resumed, it makes one child
        child_model = gateway_pb2.Model(id=derived_id("mdl", ctx.job.id), name=f"{model.name} INT8",
                                        framework=model.framework, artifact=result.model, create_time=now())
        child = gateway_pb2.Project(
            id=derived_id("prj", ctx.job.id), name=request.name.strip() or f"{parent.name} INT8",
            model_id=child_model.id, dataset_id=parent.dataset_id, device=parent.device, parent_id=parent.id,
            create_time=now(), optimization=gateway_pb2.Optimization(result=result, job_id=ctx.job.id),
        )
        if parent.HasField("accuracy_settings"):
            child.accuracy_settings.CopyFrom(parent.accuracy_settings)
        ctx.on_success(lambda tx: (self.catalog.models.insert(child_model, tx), self.catalog.projects.insert(child, tx)))
        return common_pb2.JobOutput(project_id=child.id, model_id=child_model.id)
