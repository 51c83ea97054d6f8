"""GatewayService: protobuf in, a call into the gateway's domain modules, protobuf out.

Every RPC of the contract is served here; a method missing from this class would answer
UNIMPLEMENTED (the generated base class), never a fake success.
"""

from __future__ import annotations

import logging
import threading

import grpc

from workbench_runtime.errors import Unavailable, WorkbenchError
from services.common.interceptors import to_grpc_status
from services.common.object_store import ObjectStore
from services.common.server import NOT_SERVING, SERVING, HealthServicer, registrar_for
from services.common.settings import Settings
from services.gateway.datasets import Datasets
from services.gateway.figures import project_figures
from services.gateway.db import Database
from services.gateway.downloads import Downloads
from services.gateway.jobs import JobManager
from services.gateway.measurements import Measurements
from services.gateway.models import ModelImports
from services.gateway.optimize import Optimizations
from services.gateway.packages import Packages
from services.gateway.projects import Catalog
from services.gateway.reports import Reports
from services.gateway.uploads import Uploads
from services.gateway.workers import Workers
from workbench.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


DATABASE_CHECK_S = 2.0


class Gateway:
    """The gateway's domain, wired to one catalog database and one object store."""

    def __init__(self, settings: Settings, store: ObjectStore, database: Database | None = None):
        store.ensure_bucket(settings.bucket)
        self.db = database or Database(settings.database_url)
        self.db.migrate()
        self.jobs = JobManager(self.db, lease_s=settings.job_lease_seconds, max_running=settings.max_jobs,
                               max_watchers=settings.max_watchers)
        self.catalog = Catalog(self.db, self.jobs)
        self.uploads = Uploads(self.db, store, settings.bucket, self.jobs, settings.max_upload_bytes)
        workers = Workers(settings)
        self.model_imports = ModelImports(self.catalog, self.uploads, self.jobs, workers, settings.bucket)
        self.datasets = Datasets(self.catalog, self.uploads, self.jobs, workers, store, settings.bucket)
        self.measurements = Measurements(self.catalog, self.jobs, workers, store, settings.bucket)
        self.optimizations = Optimizations(self.catalog, self.jobs, workers, settings.bucket)
        self.reports = Reports(self.db, self.catalog, self.jobs, workers, store, settings.bucket)
        self.packages = Packages(self.db, self.catalog, self.jobs, store, settings.bucket)
        self.downloads = Downloads(store, settings.bucket)
        self._stopped = threading.Event()

    def start(self, health: HealthServicer | None = None) -> None:
        """Run jobs (this gateway's share of the queue) and, with health, report the database's."""
        self.jobs.start()
        if health is not None:
            threading.Thread(target=self._watch_database, args=(health,), name="database-health", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        self.jobs.stop()
        self.db.dispose()

    def _watch_database(self, health: HealthServicer) -> None:
        """NOT_SERVING while the catalog database cannot be reached: load balancers send calls elsewhere."""
        serving = True
        while not self._stopped.wait(DATABASE_CHECK_S):
            try:
                self.db.ping()
                now_serving = True
            except Unavailable as exc:
                now_serving = False
                if serving:
                    log.error("%s", exc.message)
            if now_serving != serving:
                serving = now_serving
                for name in ("", SERVICE_NAME):
                    health.set(name, SERVING if serving else NOT_SERVING)


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, gateway: Gateway):
        self.gw = gateway

    # -- uploads ---------------------------------------------------------------------------

    def CreateUpload(self, request, context):
        upload, url, expiry = self.gw.uploads.create(request.file_name, request.size, request.request_id)
        response = gateway_pb2.CreateUploadResponse(upload=upload, upload_url=url)
        response.expire_time.GetCurrentTime()
        response.expire_time.FromSeconds(response.expire_time.seconds + int(expiry.total_seconds()))
        return response

    def CompleteUpload(self, request, context):
        return gateway_pb2.CompleteUploadResponse(job=self.gw.uploads.complete(request.upload_id))

    def UploadFile(self, request_iterator, context):
        return gateway_pb2.UploadFileResponse(upload=self.gw.uploads.receive(request_iterator))

    def GetUpload(self, request, context):
        return gateway_pb2.GetUploadResponse(upload=self.gw.uploads.get(request.upload_id))

    # -- models and datasets ---------------------------------------------------------------

    def ImportModel(self, request, context):
        return gateway_pb2.ImportModelResponse(job=self.gw.model_imports.start(request))

    def GetModel(self, request, context):
        return gateway_pb2.GetModelResponse(model=self.gw.catalog.models.get(request.model_id, "model_id"))

    def ListModels(self, request, context):
        models, token = self.gw.catalog.models.list(request.page_size, request.page_token, not request.oldest_first)
        return gateway_pb2.ListModelsResponse(models=models, next_page_token=token)

    def DeleteModel(self, request, context):
        self.gw.catalog.delete_model(request.model_id)
        return gateway_pb2.DeleteModelResponse()

    def ImportDataset(self, request, context):
        return gateway_pb2.ImportDatasetResponse(job=self.gw.datasets.start_import(request))

    def DeleteDataset(self, request, context):
        self.gw.datasets.delete(request.dataset_id)
        return gateway_pb2.DeleteDatasetResponse()

    def PreviewDataset(self, request, context):
        return self.gw.datasets.preview(request.dataset_id, request.max_images, context.time_remaining())

    def GetDataset(self, request, context):
        return gateway_pb2.GetDatasetResponse(dataset=self.gw.catalog.datasets.get(request.dataset_id, "dataset_id"))

    def ListDatasets(self, request, context):
        datasets, token = self.gw.catalog.datasets.list(request.page_size, request.page_token,
                                                        not request.oldest_first)
        return gateway_pb2.ListDatasetsResponse(datasets=datasets, next_page_token=token)

    # -- projects --------------------------------------------------------------------------

    def CreateProject(self, request, context):
        return gateway_pb2.CreateProjectResponse(project=self.gw.catalog.create_project(request))

    def GetProject(self, request, context):
        return gateway_pb2.GetProjectResponse(project=self.gw.catalog.projects.get(request.project_id, "project_id"))

    def ListProjects(self, request, context):
        projects, token = self.gw.catalog.list_projects(request.page_size, request.page_token, request.parent_id,
                                                        not request.oldest_first)
        return gateway_pb2.ListProjectsResponse(projects=projects, next_page_token=token)

    def DeleteProject(self, request, context):
        self.gw.catalog.delete_project(request.project_id)
        return gateway_pb2.DeleteProjectResponse()

    def OptimizeProject(self, request, context):
        return gateway_pb2.OptimizeProjectResponse(job=self.gw.optimizations.start(request))

    # -- measurements ----------------------------------------------------------------------

    def BenchmarkProject(self, request, context):
        return gateway_pb2.BenchmarkProjectResponse(job=self.gw.measurements.benchmark(request))

    def SweepProject(self, request, context):
        return gateway_pb2.SweepProjectResponse(job=self.gw.measurements.sweep(request))

    def CompareProjects(self, request, context):
        return self.gw.measurements.compare(request.first_project_id, request.second_project_id)

    def GetSweepChart(self, request, context):
        return self.gw.measurements.sweep_chart(request.project_id)

    def GetProjectProvenance(self, request, context):
        return gateway_pb2.GetProjectProvenanceResponse(
            figures=project_figures(self.gw.catalog, self.gw.reports, request.project_id))

    # -- accuracy reports ------------------------------------------------------------------

    def EvaluateProject(self, request, context):
        return gateway_pb2.EvaluateProjectResponse(job=self.gw.reports.start(request))

    def GetReport(self, request, context):
        return gateway_pb2.GetReportResponse(report=self.gw.reports.records.get(request.report_id, "report_id"))

    def ListReports(self, request, context):
        reports, token = self.gw.reports.list(request.project_id, request.page_size, request.page_token,
                                              not request.oldest_first)
        return gateway_pb2.ListReportsResponse(reports=reports, next_page_token=token)

    def ListReportRows(self, request, context):
        return self.gw.reports.rows(request, context.time_remaining())

    def RenderReportImage(self, request, context):
        return self.gw.reports.picture(request, context.time_remaining())

    # -- deployment packages ---------------------------------------------------------------

    def ExportPackage(self, request, context):
        return gateway_pb2.ExportPackageResponse(job=self.gw.packages.start(request))

    def GetPackage(self, request, context):
        return self.gw.packages.get(request.package_id)

    # -- downloads -------------------------------------------------------------------------

    def ReadObject(self, request, context):
        with self.gw.downloads.open(request.object) as download:
            for i, chunk in enumerate(download):
                yield gateway_pb2.ReadObjectResponse(chunk=chunk, size=download.size if i == 0 else 0)

    # -- jobs ------------------------------------------------------------------------------

    def GetJob(self, request, context):
        return gateway_pb2.GetJobResponse(job=self.gw.jobs.get(request.job_id))

    def ListJobs(self, request, context):
        jobs, token = self.gw.jobs.list(request.page_size, request.page_token, request.project_id, request.state,
                                        not request.oldest_first)
        return gateway_pb2.ListJobsResponse(jobs=jobs, next_page_token=token)

    def WatchJob(self, request, context: grpc.ServicerContext, send_response_callback):
        def send(event: common_pb2.JobEvent | None, error: WorkbenchError | None = None) -> None:
            if event is not None:
                send_response_callback(gateway_pb2.WatchJobResponse(event=event))
                return
            if error is not None:
                status = to_grpc_status(error)
                context.set_code(status.code)
                context.set_details(status.details)
                context.set_trailing_metadata(status.trailing_metadata)
            send_response_callback(None)

        watch = self.gw.jobs.open_watch(request.job_id, request.after_sequence, send)
        if not context.add_callback(watch.close):  # the call already ended
            watch.close()

    # one feeder thread serves every watch (services.gateway.watches), not a server thread each
    WatchJob.experimental_non_blocking = True  # type: ignore[attr-defined]

    def CancelJob(self, request, context):
        return gateway_pb2.CancelJobResponse(job=self.gw.jobs.cancel(request.job_id))


# registrar(settings): the `register` callback for services.common.server, which builds the gateway, adds it to
# the server and runs its jobs while the server serves
registrar = registrar_for(lambda settings, store: GatewayServicer(Gateway(settings, store)),
                          gateway_pb2_grpc.add_GatewayServiceServicer_to_server, SERVICE_NAME,
                          runs=lambda servicer: servicer.gw)
