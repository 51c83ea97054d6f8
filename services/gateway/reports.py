"""Accuracy reports: mAP when the dataset is annotated, and for a child project the comparison of its
predictions with its parent's (the parent is evaluated first when it has no report yet)."""

from __future__ import annotations

from datetime import timedelta

from workbench_runtime.errors import FailedPrecondition
from services.common.object_store import ObjectStore
from services.gateway import db as schema
from services.gateway.db import Database
from services.gateway.jobs import JobContext, JobManager, now
from services.gateway.projects import Catalog
from services.gateway.records import Records, validate_id
from services.gateway.workers import Workers, call, follow
from workbench.v1 import accuracy_pb2, common_pb2, gateway_pb2

DOWNLOAD_EXPIRY = timedelta(hours=1)
KIND = common_pb2.JOB_KIND_EVALUATE


class Reports:
    def __init__(self, database: Database, catalog: Catalog, jobs: JobManager, workers: Workers,
                 store: ObjectStore, bucket: str):
        self.catalog, self.jobs, self.workers = catalog, jobs, workers
        self.store, self.bucket = store, bucket
        self.records: Records[gateway_pb2.Report] = Records(
            database, schema.reports, "rpt", gateway_pb2.Report, lambda r: {"project_id": r.project_id})
        jobs.register(KIND, gateway_pb2.EvaluateProjectRequest, self._run)

    def _inputs(self, project: gateway_pb2.Project):
        if not project.model_id or not project.dataset_id:
            raise FailedPrecondition(f"project {project.id} needs a model and a dataset", field="project_id")
        return (self.catalog.models.get(project.model_id, "project.model_id").artifact,
                self.catalog.datasets.get(project.dataset_id, "project.dataset_id").artifact)

    def start(self, request: gateway_pb2.EvaluateProjectRequest) -> common_pb2.Job:
        existing = self.jobs.for_request(KIND, request.request_id)
        if existing:
            return existing
        self._plan(request)
        return self.jobs.submit(KIND, request, project_id=request.project_id, request_id=request.request_id)

    def _plan(self, request: gateway_pb2.EvaluateProjectRequest):
        project = self.catalog.projects.get(request.project_id, "project_id")
        self._inputs(project)
        parent = self.catalog.projects.get(project.parent_id, "project.parent_id") if project.parent_id else None
        settings = accuracy_pb2.AccuracySettings()
        settings.CopyFrom(project.accuracy_settings)
        settings.MergeFrom(request.settings)
        return project, parent, settings

    def _run(self, ctx: JobContext, request: gateway_pb2.EvaluateProjectRequest) -> common_pb2.JobOutput:
        project, parent, settings = self._plan(request)
        parent_report = None
        if parent is not None:
            parent_report = self.latest(parent.id)
            if parent_report is None:  # stored at once: it stands on its own, and a resumed job reuses it
                parent_report = self.records.insert(self._evaluate(ctx, parent, settings, None))
        report = self._evaluate(ctx, project, settings, parent_report)
        ctx.on_success(lambda tx: self.records.insert(report, tx))
        return common_pb2.JobOutput(project_id=project.id, report_id=report.id)

    def _evaluate(self, ctx: JobContext, project: gateway_pb2.Project, settings: accuracy_pb2.AccuracySettings,
                  parent_report: gateway_pb2.Report | None) -> gateway_pb2.Report:
        model, dataset = self._inputs(project)
        report_id = self.records.new_id()
        evaluate = accuracy_pb2.EvaluateRequest(
            model=model, dataset=dataset, settings=settings, compute_map=dataset.HasField("annotations"),
            output_bucket=self.bucket, output_prefix=f"reports/{report_id}/")
        if parent_report is not None:
            evaluate.parent_predictions.CopyFrom(parent_report.result.predictions)
        result = follow(ctx, "accuracy", self.workers.accuracy.Evaluate, evaluate)
        result.provenance.job_id = ctx.job.id
        report = gateway_pb2.Report(id=report_id, project_id=project.id, result=result, create_time=now())
        if parent_report is not None:
            report.parent_id = parent_report.project_id
            report.parent_predictions.CopyFrom(parent_report.result.predictions)
        return report

    def latest(self, project_id: str) -> gateway_pb2.Report | None:
        return self.records.find(project_id=project_id)

    def list(self, project_id: str, page_size: int, page_token: str, newest_first: bool = True):
        if project_id:
            validate_id(project_id, "project_id", "prj")
        return self.records.list(page_size, page_token, newest_first, project_id=project_id or None)

    def rows(self, request: gateway_pb2.ListReportRowsRequest, remaining_s: float | None = None
             ) -> gateway_pb2.ListReportRowsResponse:
        report = self.records.get(request.report_id, "report_id")
        if not report.result.HasField("comparison_rows"):
            raise FailedPrecondition(f"report {report.id} compares with no parent: it has no rows",
                                     field="report_id")
        response = call("accuracy", self.workers.accuracy.ListComparisonRows, accuracy_pb2.ListComparisonRowsRequest(
            comparison_rows=report.result.comparison_rows, mode=request.mode, order_by=request.order_by,
            only_differences=request.only_differences, class_name=request.class_name,
            page_size=request.page_size, page_token=request.page_token), remaining_s)
        return gateway_pb2.ListReportRowsResponse(rows=response.rows, next_page_token=response.next_page_token,
                                                  total_size=response.total_size)

    def picture(self, request: gateway_pb2.RenderReportImageRequest, remaining_s: float | None = None
                ) -> gateway_pb2.RenderReportImageResponse:
        report = self.records.get(request.report_id, "report_id")
        project = self.catalog.projects.get(report.project_id, "report.project_id")
        _, dataset = self._inputs(project)
        render = accuracy_pb2.RenderImageRequest(
            dataset=dataset, image_id=request.image_id, output_bucket=self.bucket,
            score_threshold=report.result.effective_settings.reference_threshold or 0.25)
        if request.hide_first:
            pass  # a set with neither predictions nor the annotations as its source is not drawn
        elif request.against_annotations or not report.parent_id:
            render.first_source = accuracy_pb2.BOX_SOURCE_ANNOTATIONS
        else:
            render.first_predictions.CopyFrom(report.parent_predictions)
            render.first_source = accuracy_pb2.BOX_SOURCE_PARENT
        if not request.hide_second:
            render.second_predictions.CopyFrom(report.result.predictions)
            render.second_source = accuracy_pb2.BOX_SOURCE_OPTIMIZED if report.parent_id else \
                accuracy_pb2.BOX_SOURCE_UNSPECIFIED
        png = call("accuracy", self.workers.accuracy.RenderImage, render, remaining_s).png
        return gateway_pb2.RenderReportImageResponse(
            png=png, download_url=self.store.presigned_get(png.bucket, png.key, DOWNLOAD_EXPIRY))
