"""The web console: the DL Workbench tutorial as pages, over the gateway's API through the Python SDK.

Pages are rendered on the server (Jinja2) and work without JavaScript; one small script adds what a
page cannot do alone: upload progress, live job progress (server-sent events fed by WatchJob) and the
visualisation toggles. The console holds no database or S3 credentials: pictures, charts and packages
come through gateway RPCs. The gateway token a person types is kept in an HttpOnly cookie (security.py).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import anyio
import grpc
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.web import forms, pages, present, security
from services.web.forms import FormError
from services.web.security import CsrfRefused
from workbench import WorkbenchClient, WorkbenchError
from workbench.v1 import common_pb2

HERE = Path(__file__).parent
# HTTP statuses for the gateway's gRPC codes; anything else is the gateway's fault (502)
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# a watcher waits in a thread for the gateway's next event: its own pool, so watchers never starve pages
WATCHERS = anyio.CapacityLimiter(1000)


def create_app(client: WorkbenchClient) -> Starlette:
    """client: the console's channel to the gateway, with no token; each request adds its user's."""
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(),
                            trim_blocks=True, lstrip_blocks=True)
    present.install(templates)

    def render(request: Request, name: str, context: dict, status: int = 200) -> HTMLResponse:
        context = dict(context, request=request, csrf=security.csrf_token(request), new_request_id=uuid.uuid4().hex,
                       signed_in=bool(security.gateway_token(request)))
        response = HTMLResponse(templates.get_template(name).render(context), status)
        security.remember_csrf(request, response)
        return response

    def gateway(request: Request) -> WorkbenchClient:
        return client.with_token(security.gateway_token(request))

    async def page(request: Request, name: str, gather, *args) -> HTMLResponse:
        return render(request, name, await run_in_threadpool(gather, gateway(request), *args))

    async def posted(request: Request) -> FormData:
        """The form of a state-changing request, after its CSRF check."""
        await security.check_csrf(request)
        return await request.form(max_part_size=1024 * 1024)

    def request_id(form: FormData) -> str:
        value = str(form.get("request_id") or "")
        return value if _REQUEST_ID.match(value) else uuid.uuid4().hex

    def to_job(job: common_pb2.Job) -> RedirectResponse:
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    # -- pages ---------------------------------------------------------------------------------

    async def start(request: Request):
        return await page(request, "start.html", pages.start)

    async def project(request: Request):
        return await page(request, "project.html", pages.project, request.path_params["project_id"])

    async def model(request: Request):
        found = await run_in_threadpool(gateway(request).get_model, request.path_params["model_id"])
        return render(request, "model.html", dict(model=found))

    async def dataset(request: Request):
        found = await run_in_threadpool(gateway(request).get_dataset, request.path_params["dataset_id"])
        return render(request, "dataset.html", dict(dataset=found))

    async def compare(request: Request):
        q = request.query_params
        return await page(request, "compare.html", pages.compare, q.get("first", ""), q.get("second", ""))

    async def report(request: Request):
        q = request.query_params
        query = pages.ReportQuery(advanced=q.get("mode") == "advanced", order_by=q.get("order_by", ""),
                                  only_differences=bool(q.get("differences")), class_name=q.get("class_name", ""),
                                  page_token=q.get("page_token", ""))
        return await page(request, "report.html", pages.report, request.path_params["report_id"], query)

    async def visualize(request: Request):
        context = await run_in_threadpool(pages.visualize, gateway(request), request.path_params["report_id"])
        return render(request, "visualize.html", dict(context, image_id=request.path_params["image_id"],
                                                       image=request.query_params.get("image", "")))

    async def job(request: Request):
        return await page(request, "job.html", pages.job, request.path_params["job_id"])

    # -- pictures and downloads: through gateway RPCs, never a presigned URL the browser cannot reach --

    def png(data: bytes) -> Response:
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    async def report_picture(request: Request):
        q = request.query_params
        data = await run_in_threadpool(
            gateway(request).report_image, request.path_params["report_id"], request.path_params["image_id"],
            against_annotations=q.get("against") == "annotations",
            hide_first=q.get("first") == "0", hide_second=q.get("second") == "0")
        return png(data)

    async def sweep_chart(request: Request):
        return png(await run_in_threadpool(gateway(request).sweep_chart, request.path_params["project_id"]))

    async def dataset_preview(request: Request):
        return png(await run_in_threadpool(gateway(request).preview_dataset, request.path_params["dataset_id"]))

    async def package_download(request: Request):
        client_ = gateway(request)
        package = await run_in_threadpool(client_.get_package, request.path_params["package_id"])
        chunks = client_.iter_object(package.archive)
        first = await run_in_threadpool(next, chunks, b"")  # errors surface here, before any byte is sent
        name = f"workbench-{package.project_id}-{package.id}.tar.gz"

        def body():
            yield first
            yield from chunks

        return StreamingResponse(body(), media_type="application/gzip", headers={
            "Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(package.archive.size)})

    # -- live job progress ----------------------------------------------------------------------

    async def job_events(request: Request):
        """Server-sent events of one job, from WatchJob; the browser resumes with Last-Event-ID."""
        after = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        stream = gateway(request).open_watch(request.path_params["job_id"], int(after) if after.isdigit() else 0)

        async def events():
            try:
                while True:
                    response = await anyio.to_thread.run_sync(next, stream, None, limiter=WATCHERS)
                    if response is None:
                        return
                    event = response.event
                    yield f"id: {event.sequence}\ndata: {json.dumps(present.job_event(event))}\n\n"
            except grpc.RpcError as error:
                failure = WorkbenchError.from_rpc_error(error)
                if failure.code != grpc.StatusCode.CANCELLED:
                    yield f"event: failure\ndata: {json.dumps({'message': present.error_text(failure)})}\n\n"
            finally:
                stream.cancel()  # the browser left: end the gateway stream and free its thread

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- actions --------------------------------------------------------------------------------

    async def create_project(request: Request):
        form = await posted(request)
        name = forms.text(form, "name", label="project name")
        model_id = forms.text(form, "model_id", label="model")
        dataset_id = forms.text(form, "dataset_id", label="dataset")
        device = forms.text(form, "device", required=False) or "CPU"
        created = await run_in_threadpool(lambda: gateway(request).create_project(
            name, model_id=model_id, dataset_id=dataset_id, device=device, request_id=request_id(form)))
        return RedirectResponse(f"/projects/{created.id}", status_code=303)

    async def import_model(request: Request):
        form = await posted(request)
        name = forms.text(form, "name", label="model name")
        framework = forms.choice(form, "framework", forms.FRAMEWORKS)
        chosen = forms.model_files(form)

        def upload_and_import(client_: WorkbenchClient) -> common_pb2.Job:
            uploads = {role: forms.upload(client_, f) for role, f in chosen.items()}
            return client_.import_model(name, uploads, framework=framework, request_id=request_id(form))

        return to_job(await run_in_threadpool(upload_and_import, gateway(request)))

    async def import_dataset(request: Request):
        form = await posted(request)
        name = forms.text(form, "name", label="dataset name")
        fmt = forms.choice(form, "format", forms.DATASET_FORMATS)
        chosen = forms.files(form, "files")
        if not chosen:
            raise FormError("files", "choose an archive (zip, tar.gz) or the images of the dataset")

        def upload_and_import(client_: WorkbenchClient) -> common_pb2.Job:
            uploads = [forms.upload(client_, f) for f in chosen]
            return client_.import_dataset(name, uploads, format=fmt, request_id=request_id(form))

        return to_job(await run_in_threadpool(upload_and_import, gateway(request)))

    async def optimize(request: Request):
        form = await posted(request)
        config = forms.optimize_config(form)
        calibration = forms.text(form, "calibration_dataset_id", required=False)
        name = forms.text(form, "name", required=False)
        return to_job(await run_in_threadpool(
            gateway(request).optimize_project, request.path_params["project_id"], config, name=name,
            request_id=request_id(form), calibration_dataset_id=calibration))

    async def benchmark(request: Request):
        form = await posted(request)
        config = forms.benchmark_config(form)
        return to_job(await run_in_threadpool(gateway(request).benchmark_project, request.path_params["project_id"],
                                              config, request_id=request_id(form)))

    async def sweep(request: Request):
        form = await posted(request)
        grid = forms.sweep_grid(form)
        base = common_pb2.BenchmarkConfig(duration_seconds=forms.number(form, "duration_seconds", 0.5, 600,
                                                                        label="duration"))
        return to_job(await run_in_threadpool(lambda: gateway(request).sweep_project(
            request.path_params["project_id"], base=base, request_id=request_id(form), **grid)))

    async def evaluate(request: Request):
        form = await posted(request)
        return to_job(await run_in_threadpool(gateway(request).evaluate_project, request.path_params["project_id"],
                                              request_id=request_id(form)))

    async def export_package(request: Request):
        form = await posted(request)
        return to_job(await run_in_threadpool(gateway(request).export_package, request.path_params["project_id"],
                                              request_id(form)))

    async def cancel(request: Request):
        await posted(request)
        cancelled = await run_in_threadpool(gateway(request).cancel_job, request.path_params["job_id"])
        return to_job(cancelled)

    # -- signing in -----------------------------------------------------------------------------

    async def login_form(request: Request):
        return render(request, "login.html", dict(next=security.local_path(request.query_params.get("next", "/"))))

    async def login(request: Request):
        form = await posted(request)
        token = str(form.get("token") or "").strip()
        target = security.local_path(str(form.get("next") or "/"))
        if not token:
            raise FormError("token", "enter the gateway's token")
        try:  # one cheap call tells whether the gateway takes this token
            await run_in_threadpool(lambda: next(client.with_token(token).list_projects(page_size=1), None))
        except WorkbenchError as error:
            if error.code != grpc.StatusCode.UNAUTHENTICATED:
                raise
            return render(request, "login.html", dict(next=target, error="The gateway refused this token."), 401)
        response = RedirectResponse(target, status_code=303)
        security.remember_token(request, response, token)
        return response

    async def logout(request: Request):
        await posted(request)
        response = RedirectResponse("/login", status_code=303)
        security.forget_token(response)
        return response

    async def healthz(request: Request):
        return PlainTextResponse("ok")

    # -- errors: a readable status and message, never a stack trace -----------------------------

    async def gateway_error(request: Request, error: WorkbenchError):
        # no token yet: a person's page asks for it; a stale token (or a script) gets the status, not a loop
        if (error.code == grpc.StatusCode.UNAUTHENTICATED and request.method == "GET"
                and not security.gateway_token(request) and _wants_html(request)):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        status = HTTP_STATUS.get(error.code, 502)
        return _problem(request, status, error.code.name, present.error_text(error))

    async def form_error(request: Request, error: FormError):
        return _problem(request, 400, "INVALID_INPUT", error.message)

    async def csrf_error(request: Request, error: CsrfRefused):
        return _problem(request, 403, "FORBIDDEN", str(error))

    async def unexpected(request: Request, error: Exception):
        # Starlette re-raises it after this response, and uvicorn logs it with its traceback
        return _problem(request, 500, "INTERNAL", "the console failed unexpectedly; the error is in its log")

    def _problem(request: Request, status: int, code: str, message: str) -> Response:
        if not _wants_html(request):
            return PlainTextResponse(f"{code}: {message}", status)
        return render(request, "error.html", dict(status=status, code=code, message=message), status)

    routes = [
        Route("/", start),
        Route("/healthz", healthz),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/projects", create_project, methods=["POST"]),
        Route("/projects/{project_id}", project),
        Route("/projects/{project_id}/optimize", optimize, methods=["POST"]),
        Route("/projects/{project_id}/benchmark", benchmark, methods=["POST"]),
        Route("/projects/{project_id}/sweep", sweep, methods=["POST"]),
        Route("/projects/{project_id}/evaluate", evaluate, methods=["POST"]),
        Route("/projects/{project_id}/package", export_package, methods=["POST"]),
        Route("/projects/{project_id}/sweep.png", sweep_chart),
        Route("/models", import_model, methods=["POST"]),
        Route("/models/{model_id}", model),
        Route("/datasets", import_dataset, methods=["POST"]),
        Route("/datasets/{dataset_id}", dataset),
        Route("/datasets/{dataset_id}/preview.png", dataset_preview),
        Route("/compare", compare),
        Route("/reports/{report_id}", report),
        Route("/reports/{report_id}/images/{image_id:int}", visualize),
        Route("/reports/{report_id}/images/{image_id:int}.png", report_picture),
        Route("/jobs/{job_id}", job),
        Route("/jobs/{job_id}/events", job_events),
        Route("/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/packages/{package_id}/download", package_download),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={
        WorkbenchError: gateway_error, FormError: form_error, CsrfRefused: csrf_error, Exception: unexpected})
    app.state.client = client
    return app


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") or request.method == "POST"
