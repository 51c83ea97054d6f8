"""Typed Python client for the Workbench gateway.

Wraps the generated stubs with: one channel per client, a deadline on every call, transparent
retries of UNAVAILABLE (gRPC's own retry policy, so streams are retried only before the first
response), a request_id on every create so a retry never makes a second resource, automatic
pagination, and errors as WorkbenchError with the status code and the field at fault.

Pictures, charts, previews and packages come through the gateway (ReadObject), never from the presigned
download_url in the responses, which names the object store's address: clients outside the cluster, or a
web console allowed to reach only the gateway, cannot reach it. The URL stays there for those that can.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import os
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from workbench.v1 import accuracy_pb2, common_pb2, gateway_pb2, gateway_pb2_grpc, quantizer_pb2

try:  # optional: where OpenTelemetry is installed, calls made inside a span carry its trace to the gateway
    from opentelemetry import propagate as _otel_propagate
    from opentelemetry import trace as _otel_trace
except ImportError:
    _otel_propagate = _otel_trace = None

DEFAULT_ADDRESS = "127.0.0.1:50051"
CHUNK_BYTES = 1024 * 1024
WATCH_RECONNECTS = 8
UPLOADS_AT_ONCE = 4  # a dataset's loose files in flight together (each its own UploadFile stream)
TERMINAL_STATES = (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED)


def _retry_service_config(attempts: int) -> str:
    return json.dumps({
        "methodConfig": [{
            "name": [{"service": "workbench.v1.GatewayService"}],
            "retryPolicy": {
                "maxAttempts": attempts,
                "initialBackoff": "0.2s",
                "maxBackoff": "5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }]
    })


class WorkbenchError(Exception):
    """A call failed: the gRPC status code name, the server's message, and the request field at fault."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str = "", retry_after_s: float | None = None):
        super().__init__(f"{code.name}: {message}" + (f" (field: {field})" if field else ""))
        self.code, self.message, self.field, self.retry_after_s = code, message, field, retry_after_s

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "WorkbenchError":
        field, retry_after_s = "", None
        status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
        if status is not None:
            from google.rpc import error_details_pb2

            for detail in status.details:
                bad_request, retry = error_details_pb2.BadRequest(), error_details_pb2.RetryInfo()
                if detail.Unpack(bad_request) and bad_request.field_violations:
                    field = bad_request.field_violations[0].field
                elif detail.Unpack(retry):
                    retry_after_s = retry.retry_delay.ToTimedelta().total_seconds()
        return cls(error.code(), error.details() or "", field, retry_after_s)


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
        grpc.ClientCallDetails):
    pass


class _TraceContext(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                    grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the caller's current OpenTelemetry context (W3C `traceparent`) to calls made inside a span."""

    @staticmethod
    def _details(d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        if not _otel_trace.get_current_span().get_span_context().is_valid:
            return d
        carrier: dict[str, str] = {}
        _otel_propagate.inject(carrier)
        metadata = [m for m in (d.metadata or ()) if m[0] not in carrier] + list(carrier.items())
        return _CallDetails(d.method, d.timeout, metadata, d.credentials, getattr(d, "wait_for_ready", None),
                            getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class JobFailedError(WorkbenchError):
    """wait_job ended with a job that failed or was cancelled; `code` is the status it ended with (e.g.
    INVALID_ARGUMENT for input a service refused, UNAVAILABLE for one out of reach, CANCELLED)."""

    def __init__(self, job: common_pb2.Job):
        state = common_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
        where = f" in {job.failed_service}" if job.failed_service else ""
        # ABORTED only for a job stored before jobs carried their code
        code = _STATUS_CODES.get(job.error_code) if job.error_code else None
        super().__init__(code or grpc.StatusCode.ABORTED, f"job {job.id} {state.lower()}{where}: {job.error}")
        self.job = job


class WorkbenchClient:
    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        timeout: float = 60.0,
        retry_attempts: int = 5,
    ):
        """tls_ca: trust this CA and speak TLS; tls_cert and tls_key: present this client certificate too
        (a gateway that requires mutual TLS)."""
        self.address = address or os.environ.get("WORKBENCH_ADDRESS", DEFAULT_ADDRESS)
        self.timeout = timeout
        token = token if token is not None else os.environ.get("WORKBENCH_TOKEN", "")
        self._metadata = _bearer(token)
        self._owns_channel = True
        options = [
            ("grpc.service_config", _retry_service_config(retry_attempts)),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]
        if tls_ca:
            credentials = grpc.ssl_channel_credentials(
                Path(tls_ca).read_bytes(),
                Path(tls_key).read_bytes() if tls_key else None,
                Path(tls_cert).read_bytes() if tls_cert else None)
            self._channel = grpc.secure_channel(self.address, credentials, options)
        else:
            self._channel = grpc.insecure_channel(self.address, options)
        if _otel_propagate is not None:
            self._channel = grpc.intercept_channel(self._channel, _TraceContext())
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def with_token(self, token: str) -> "WorkbenchClient":
        """A client sending `authorization: Bearer <token>` (nothing for "") on every call, sharing this
        client's channel, stubs, timeout and retry policy: cheap (no new channel), so a web console can make
        one per browser request. Its close() does nothing: the shared channel stays open until the client
        that made it (the owner) is closed, after which the copies fail too."""
        other = copy.copy(self)
        other._metadata = _bearer(token)
        other._owns_channel = False
        return other

    def close(self) -> None:
        """Close the channel; a no-op on a client made by with_token, which does not own it."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> "WorkbenchClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: Callable, request, timeout: float | None = None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise WorkbenchError.from_rpc_error(error) from None

    # -- health ----------------------------------------------------------------------------

    def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING, ... for the gateway (or one of its services by full name)."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout=5)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    # -- uploads ---------------------------------------------------------------------------

    def upload_file(self, path: str | os.PathLike, request_id: str | None = None) -> gateway_pb2.Upload:
        """Stream a local file through the gateway in chunks; returns the stored, hashed upload."""
        path = Path(path)
        with path.open("rb") as f:
            return self.upload_fileobj(path.name, f, path.stat().st_size, request_id)

    def upload_fileobj(self, file_name: str, fileobj: BinaryIO, size: int, request_id: str | None = None
                       ) -> gateway_pb2.Upload:
        """upload_file for an open binary file (read from where it stands), named file_name: the gateway
        and the services tell formats apart by the name."""
        header = gateway_pb2.UploadFileHeader(file_name=file_name, size=size, request_id=request_id or uuid.uuid4().hex)

        def messages() -> Iterator[gateway_pb2.UploadFileRequest]:
            yield gateway_pb2.UploadFileRequest(header=header)
            while chunk := fileobj.read(CHUNK_BYTES):
                yield gateway_pb2.UploadFileRequest(chunk=chunk)

        # Client streams are not retried by the channel: the iterator cannot be replayed.
        return self._call(self.stub.UploadFile, messages(), timeout=max(self.timeout, 3600)).upload

    def upload_file_presigned(self, path: str | os.PathLike, request_id: str | None = None) -> gateway_pb2.Upload:
        """PUT a local file straight to object storage, then let the gateway verify it."""
        path = Path(path)
        created = self._call(
            self.stub.CreateUpload,
            gateway_pb2.CreateUploadRequest(
                file_name=path.name, size=path.stat().st_size, request_id=request_id or uuid.uuid4().hex
            ),
        )
        with path.open("rb") as f:
            put = urllib.request.Request(created.upload_url, data=f, method="PUT")
            put.add_header("Content-Length", str(path.stat().st_size))
            with urllib.request.urlopen(put, timeout=max(self.timeout, 3600)):
                pass
        job = self._call(self.stub.CompleteUpload, gateway_pb2.CompleteUploadRequest(upload_id=created.upload.id)).job
        self.wait_job(job.id)
        return self.get_upload(created.upload.id)

    def _uploaded(self, file: str | os.PathLike | gateway_pb2.Upload) -> gateway_pb2.Upload:
        return file if isinstance(file, gateway_pb2.Upload) else self.upload_file(file)

    def get_upload(self, upload_id: str) -> gateway_pb2.Upload:
        return self._call(self.stub.GetUpload, gateway_pb2.GetUploadRequest(upload_id=upload_id)).upload

    # -- projects --------------------------------------------------------------------------

    def create_project(
        self, name: str, *, model_id: str = "", dataset_id: str = "", device: str = "", request_id: str | None = None
    ) -> gateway_pb2.Project:
        request = gateway_pb2.CreateProjectRequest(
            name=name, model_id=model_id, dataset_id=dataset_id, device=device,
            request_id=request_id or uuid.uuid4().hex,
        )
        return self._call(self.stub.CreateProject, request).project

    def get_project(self, project_id: str) -> gateway_pb2.Project:
        return self._call(self.stub.GetProject, gateway_pb2.GetProjectRequest(project_id=project_id)).project

    def list_projects(self, parent_id: str = "", page_size: int = 100, oldest_first: bool = False
                      ) -> Iterator[gateway_pb2.Project]:
        """Newest first, unless oldest_first."""
        request = gateway_pb2.ListProjectsRequest(parent_id=parent_id, page_size=page_size, oldest_first=oldest_first)
        return self._paginate(self.stub.ListProjects, request, "projects")

    def delete_project(self, project_id: str) -> None:
        self._call(self.stub.DeleteProject, gateway_pb2.DeleteProjectRequest(project_id=project_id))

    # -- models and datasets ---------------------------------------------------------------

    def import_model(
        self,
        name: str,
        files: dict[int, str | os.PathLike | gateway_pb2.Upload],
        *,
        framework: int = common_pb2.FRAMEWORK_UNSPECIFIED,
        options: common_pb2.ConvertOptions | None = None,
        request_id: str | None = None,
    ) -> common_pb2.Job:
        """Upload local files ({ModelFileRole: path}, or uploads already made) and start converting them;
        returns the job."""
        with ThreadPoolExecutor(UPLOADS_AT_ONCE) as pool:  # a cfg or labels file need not wait for the weights
            uploaded = list(pool.map(self._uploaded, files.values()))
        uploads = [gateway_pb2.ModelUpload(role=role, upload_id=upload.id) for role, upload in zip(files, uploaded)]
        request = gateway_pb2.ImportModelRequest(
            name=name, framework=framework, files=uploads, options=options, request_id=request_id or uuid.uuid4().hex
        )
        return self._call(self.stub.ImportModel, request).job

    def import_darknet(self, name: str, cfg: str | os.PathLike, weights: str | os.PathLike,
                       names: str | os.PathLike | None = None, *, options: common_pb2.ConvertOptions | None = None,
                       request_id: str | None = None) -> common_pb2.Job:
        """import_model for a Darknet cfg + weights (and class names, one per line)."""
        files = {common_pb2.MODEL_FILE_ROLE_DARKNET_CFG: cfg, common_pb2.MODEL_FILE_ROLE_DARKNET_WEIGHTS: weights}
        if names:
            files[common_pb2.MODEL_FILE_ROLE_LABELS] = names
        return self.import_model(name, files, framework=common_pb2.FRAMEWORK_DARKNET, options=options,
                                 request_id=request_id)

    def get_model(self, model_id: str) -> gateway_pb2.Model:
        return self._call(self.stub.GetModel, gateway_pb2.GetModelRequest(model_id=model_id)).model

    def delete_model(self, model_id: str) -> None:
        self._call(self.stub.DeleteModel, gateway_pb2.DeleteModelRequest(model_id=model_id))

    def import_dataset(
        self,
        name: str,
        paths: list[str | os.PathLike | gateway_pb2.Upload],
        *,
        format: int = common_pb2.DATASET_FORMAT_UNSPECIFIED,
        request_id: str | None = None,
    ) -> common_pb2.Job:
        """Upload an archive (or loose files; or uploads already made) and start importing it; returns the job.
        Loose files go up a few at a time: one at a time, a folder of small images waits on round trips."""
        with ThreadPoolExecutor(UPLOADS_AT_ONCE) as pool:
            upload_ids = [upload.id for upload in pool.map(self._uploaded, paths)]
        request = gateway_pb2.ImportDatasetRequest(
            name=name, format=format, upload_ids=upload_ids, request_id=request_id or uuid.uuid4().hex
        )
        return self._call(self.stub.ImportDataset, request).job

    def get_dataset(self, dataset_id: str) -> gateway_pb2.Dataset:
        return self._call(self.stub.GetDataset, gateway_pb2.GetDatasetRequest(dataset_id=dataset_id)).dataset

    def delete_dataset(self, dataset_id: str) -> None:
        self._call(self.stub.DeleteDataset, gateway_pb2.DeleteDatasetRequest(dataset_id=dataset_id))

    def preview_dataset(self, dataset_id: str, max_images: int = 6) -> bytes:
        """A PNG of a few images with their annotations drawn."""
        response = self._call(
            self.stub.PreviewDataset, gateway_pb2.PreviewDatasetRequest(dataset_id=dataset_id, max_images=max_images)
        )
        return self.read_object(response.png)

    def list_models(self, page_size: int = 100, oldest_first: bool = False) -> Iterator[gateway_pb2.Model]:
        request = gateway_pb2.ListModelsRequest(page_size=page_size, oldest_first=oldest_first)
        return self._paginate(self.stub.ListModels, request, "models")

    def list_datasets(self, page_size: int = 100, oldest_first: bool = False) -> Iterator[gateway_pb2.Dataset]:
        request = gateway_pb2.ListDatasetsRequest(page_size=page_size, oldest_first=oldest_first)
        return self._paginate(self.stub.ListDatasets, request, "datasets")

    def optimize_project(self, project_id: str, config: quantizer_pb2.QuantizationConfig | None = None,
                         name: str = "", request_id: str | None = None,
                         calibration_dataset_id: str = "") -> common_pb2.Job:
        """INT8 calibration; the finished job's output.project_id is the child project. The project's dataset
        judges the candidates; it also calibrates unless calibration_dataset_id names another one."""
        request = gateway_pb2.OptimizeProjectRequest(project_id=project_id, config=config, name=name,
                                                     request_id=request_id or uuid.uuid4().hex,
                                                     calibration_dataset_id=calibration_dataset_id)
        return self._call(self.stub.OptimizeProject, request).job

    # -- measurements ----------------------------------------------------------------------

    def benchmark_project(self, project_id: str, config: common_pb2.BenchmarkConfig | None = None,
                          request_id: str | None = None) -> common_pb2.Job:
        request = gateway_pb2.BenchmarkProjectRequest(project_id=project_id, config=config,
                                                      request_id=request_id or uuid.uuid4().hex)
        return self._call(self.stub.BenchmarkProject, request).job

    def sweep_project(self, project_id: str, *, batches=(), streams=(), infer_requests=(),
                      latency_limit_ms: float = 0.0, base: common_pb2.BenchmarkConfig | None = None,
                      request_id: str | None = None) -> common_pb2.Job:
        request = gateway_pb2.SweepProjectRequest(
            project_id=project_id, base=base, batches=batches, streams=streams, infer_requests=infer_requests,
            latency_limit_ms=latency_limit_ms, request_id=request_id or uuid.uuid4().hex)
        return self._call(self.stub.SweepProject, request).job

    def sweep_chart(self, project_id: str) -> bytes:
        """The PNG chart of the project's last sweep: throughput against latency, the best point, the best
        under the latency limit and the sweet spot marked."""
        response = self._call(self.stub.GetSweepChart, gateway_pb2.GetSweepChartRequest(project_id=project_id))
        return self.read_object(response.png)

    def compare_projects(self, first_project_id: str, second_project_id: str) -> gateway_pb2.CompareProjectsResponse:
        return self._call(self.stub.CompareProjects, gateway_pb2.CompareProjectsRequest(
            first_project_id=first_project_id, second_project_id=second_project_id))

    def project_provenance(self, project_id: str) -> list[gateway_pb2.Figure]:
        """Every figure held for the project, each with the inputs (by sha256), settings, software and
        machine that made it."""
        return list(self._call(self.stub.GetProjectProvenance,
                               gateway_pb2.GetProjectProvenanceRequest(project_id=project_id)).figures)

    # -- accuracy reports ------------------------------------------------------------------

    def evaluate_project(self, project_id: str, settings: accuracy_pb2.AccuracySettings | None = None,
                         request_id: str | None = None) -> common_pb2.Job:
        """mAP when annotated; for a child project, the comparison with its parent. Output: report_id."""
        request = gateway_pb2.EvaluateProjectRequest(project_id=project_id, settings=settings,
                                                     request_id=request_id or uuid.uuid4().hex)
        return self._call(self.stub.EvaluateProject, request).job

    def get_report(self, report_id: str) -> gateway_pb2.Report:
        return self._call(self.stub.GetReport, gateway_pb2.GetReportRequest(report_id=report_id)).report

    def list_reports(self, project_id: str = "", page_size: int = 100, oldest_first: bool = False
                     ) -> Iterator[gateway_pb2.Report]:
        request = gateway_pb2.ListReportsRequest(project_id=project_id, page_size=page_size, oldest_first=oldest_first)
        return self._paginate(self.stub.ListReports, request, "reports")

    def report_rows(self, report_id: str, *, advanced: bool = False, order_by: str = "", only_differences: bool = False,
                    class_name: str = "", page_size: int = 100) -> Iterator[accuracy_pb2.ComparisonRow]:
        request = gateway_pb2.ListReportRowsRequest(
            report_id=report_id, order_by=order_by, only_differences=only_differences, class_name=class_name,
            page_size=page_size,
            mode=accuracy_pb2.COMPARISON_MODE_ADVANCED if advanced else accuracy_pb2.COMPARISON_MODE_BASIC)
        return self._paginate(self.stub.ListReportRows, request, "rows")

    def report_rows_page(self, report_id: str, *, advanced: bool = False, order_by: str = "",
                         only_differences: bool = False, class_name: str = "", page_size: int = 50,
                         page_token: str = "") -> gateway_pb2.ListReportRowsResponse:
        """One page of report_rows, with its next_page_token and the total_size of the filtered rows."""
        return self._call(self.stub.ListReportRows, gateway_pb2.ListReportRowsRequest(
            report_id=report_id, order_by=order_by, only_differences=only_differences, class_name=class_name,
            page_size=page_size, page_token=page_token,
            mode=accuracy_pb2.COMPARISON_MODE_ADVANCED if advanced else accuracy_pb2.COMPARISON_MODE_BASIC))

    def report_image(self, report_id: str, image_id: int, against_annotations: bool = False, *,
                     hide_first: bool = False, hide_second: bool = False) -> bytes:
        """A PNG of one image with both sets of boxes: the parent's (or the annotations) and the project's;
        hide_first / hide_second leave one out."""
        response = self._call(self.stub.RenderReportImage, gateway_pb2.RenderReportImageRequest(
            report_id=report_id, image_id=image_id, against_annotations=against_annotations,
            hide_first=hide_first, hide_second=hide_second))
        return self.read_object(response.png)

    # -- deployment packages ---------------------------------------------------------------

    def export_package(self, project_id: str, request_id: str | None = None) -> common_pb2.Job:
        """Build the project's deployment package; the finished job's output.package_id names it."""
        request = gateway_pb2.ExportPackageRequest(project_id=project_id, request_id=request_id or uuid.uuid4().hex)
        return self._call(self.stub.ExportPackage, request).job

    def get_package(self, package_id: str) -> gateway_pb2.DeploymentPackage:
        return self._call(self.stub.GetPackage, gateway_pb2.GetPackageRequest(package_id=package_id)).package

    def download_package(self, package_id: str, path: str | os.PathLike) -> Path:
        """The package's tar.gz, written to path (verified against its sha256)."""
        response = self._call(self.stub.GetPackage, gateway_pb2.GetPackageRequest(package_id=package_id))
        return self.download_object(response.package.archive, path)

    # -- objects the gateway hands out -------------------------------------------------------

    def read_object(self, ref: common_pb2.ObjectRef, timeout: float | None = None) -> bytes:
        """The bytes of an object a response handed out (a picture, chart, preview or package), streamed
        through the gateway and checked against ref's size and sha256. Not resumed or retried once bytes
        have arrived: a failure raises WorkbenchError and the caller may call again."""
        return b"".join(self.iter_object(ref, timeout))

    def download_object(self, ref: common_pb2.ObjectRef, path: str | os.PathLike, timeout: float | None = None
                        ) -> Path:
        """read_object into a file: the file appears at path only complete and verified (written beside it
        first, then renamed); on failure nothing is left there. The deadline is at least 10 minutes."""
        path = Path(path)
        part = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with part.open("wb") as out:
                for chunk in self.iter_object(ref, timeout or max(self.timeout, 600)):
                    out.write(chunk)
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return path

    def iter_object(self, ref: common_pb2.ObjectRef, timeout: float | None = None) -> Iterator[bytes]:
        """read_object as its chunks (≤ 1 MiB each), to pass on without holding the whole object; the size
        and sha256 are checked after the last one."""
        call = self.stub.ReadObject(gateway_pb2.ReadObjectRequest(object=ref), timeout=timeout or self.timeout,
                                    metadata=self._metadata)
        digest, size, received = hashlib.sha256(), None, 0
        try:
            for response in call:
                if size is None:
                    size = response.size
                digest.update(response.chunk)
                received += len(response.chunk)
                yield response.chunk
        except grpc.RpcError as error:
            raise WorkbenchError.from_rpc_error(error) from None
        finally:
            call.cancel()  # a no-op once the stream has ended; frees it when the reader stops early
        where = f"{ref.key!r} from the gateway"
        if size is None or received != size:
            raise WorkbenchError(grpc.StatusCode.DATA_LOSS, f"reading {where} ended after {received} of "
                                 f"{size if size is not None else 'unknown'} bytes")
        if ref.sha256 and digest.hexdigest() != ref.sha256.lower():
            raise WorkbenchError(grpc.StatusCode.DATA_LOSS, f"read {where} with sha256 {digest.hexdigest()}, "
                                 f"expected {ref.sha256}")

    # -- jobs ------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> common_pb2.Job:
        return self._call(self.stub.GetJob, gateway_pb2.GetJobRequest(job_id=job_id)).job

    def list_jobs(self, project_id: str = "", state: int = 0, page_size: int = 100, oldest_first: bool = False
                  ) -> Iterator[common_pb2.Job]:
        request = gateway_pb2.ListJobsRequest(project_id=project_id, state=state, page_size=page_size,
                                              oldest_first=oldest_first)
        return self._paginate(self.stub.ListJobs, request, "jobs")

    def cancel_job(self, job_id: str) -> common_pb2.Job:
        return self._call(self.stub.CancelJob, gateway_pb2.CancelJobRequest(job_id=job_id)).job

    def open_watch(self, job_id: str, after_sequence: int = 0):
        """The bare WatchJob stream (an iterator of WatchJobResponse, raising grpc.RpcError): no reconnection,
        and cancel() ends it at once, for a server relaying it to a browser that may leave."""
        return self.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id, after_sequence=after_sequence),
                                  metadata=self._metadata)

    def watch_job(self, job_id: str, after_sequence: int = 0) -> Iterator[common_pb2.JobEvent]:
        """Every event of the job in order, ending with the terminal one; resumes after a dropped stream."""
        last, reconnects = after_sequence, 0
        while True:
            try:
                stream = self.stub.WatchJob(
                    gateway_pb2.WatchJobRequest(job_id=job_id, after_sequence=last), metadata=self._metadata
                )
                for response in stream:
                    last, reconnects = response.event.sequence, 0
                    yield response.event
                    if response.event.state in TERMINAL_STATES:
                        return
                return
            except grpc.RpcError as error:
                reconnects += 1
                failure = WorkbenchError.from_rpc_error(error)
                if failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED and failure.retry_after_s is not None:
                    # the gateway sheds watchers on purpose: come back when it says, however often
                    time.sleep(failure.retry_after_s)
                    continue
                if failure.code != grpc.StatusCode.UNAVAILABLE or reconnects > WATCH_RECONNECTS:
                    raise failure from None
                time.sleep(min(0.2 * 2**reconnects, 5.0))

    def wait_job(
        self, job_id: str, on_event: Callable[[common_pb2.JobEvent], None] | None = None
    ) -> common_pb2.Job:
        """Follow a job to its end; returns it when it succeeded, raises JobFailedError otherwise."""
        for event in self.watch_job(job_id):
            if on_event:
                on_event(event)
        job = self.get_job(job_id)
        if job.state != common_pb2.JOB_STATE_SUCCEEDED:
            raise JobFailedError(job)
        return job

    def _paginate(self, method: Callable, request, field: str) -> Iterator:
        while True:
            response = self._call(method, request)
            yield from getattr(response, field)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token
