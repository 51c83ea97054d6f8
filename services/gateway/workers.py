"""The gateway's calls to the worker services, as steps of jobs.

Every worker RPC streams progress and ends with one result; a job forwards the progress,
cancels the call on CancelJob, and fails naming the service when the call breaks.
"""

from __future__ import annotations

import time

import grpc

from services.common.channels import channel
from workbench_runtime import errors
from workbench_runtime.errors import Cancelled
from services.common.settings import Settings
from services.gateway.jobs import JobContext, JobFailed

SLOT_RETRY_S = 0.5  # how soon a job waiting for a worker slot asks again
from workbench.v1 import accuracy_pb2_grpc, benchmark_pb2_grpc, converter_pb2_grpc, quantizer_pb2_grpc


class Workers:
    def __init__(self, settings: Settings):
        token = settings.internal_token or None
        self.converter = converter_pb2_grpc.ConverterServiceStub(channel(settings.converter_addr, settings, token))
        self.quantizer = quantizer_pb2_grpc.QuantizerServiceStub(channel(settings.quantizer_addr, settings, token))
        self.benchmark = benchmark_pb2_grpc.BenchmarkServiceStub(channel(settings.benchmark_addr, settings, token))
        self.accuracy = accuracy_pb2_grpc.AccuracyServiceStub(channel(settings.accuracy_addr, settings, token))


def follow(ctx: JobContext, service: str, method, request):
    """Call a worker's streaming method, forward its progress into the job, return its result message.

    A worker whose slots are all busy refuses the call before starting: the job waits its turn, showing
    its place in line, and calls again (the channel's round robin tries the next replica each time)."""
    current: list = [None]
    ctx.on_cancel(lambda: current[0] is not None and current[0].cancel())
    waiting = False
    while True:
        started = time.perf_counter()
        current[0] = call = method(request)
        result, answered = None, False
        try:
            for response in _timed(ctx, started, call):
                if waiting:
                    ctx.wait_for(None)
                    waiting = False
                answered = True
                event = response.WhichOneof("event")
                if event == "progress":
                    ctx.report(response.progress)
                else:
                    result = getattr(response, event)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not answered:
                ahead, waiting = ctx.wait_for(service), True
                place = "" if ahead is None else f": {ahead} job{'' if ahead == 1 else 's'} ahead"
                ctx.progress("queued", 0.0, f"waiting for a free {service} slot{place}")
                time.sleep(SLOT_RETRY_S)
                ctx.check_cancelled()
                continue
            if error.code() == grpc.StatusCode.CANCELLED and ctx.cancelled:
                raise Cancelled("cancelled by request") from None
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                raise JobFailed(f"the {service} service is unavailable: {error.details()}", service,
                                error.code()) from None
            raise JobFailed(f"{service}: {error.details()}", service, error.code()) from None
        if result is None:
            raise JobFailed(f"the {service} service ended without a result", service, grpc.StatusCode.INTERNAL)
        return result


def _timed(ctx: JobContext, started: float, call):
    """call's responses, adding to the job's timings the time spent waiting for them: for the first
    (worker_first_response: dialling, the worker's queue and set-up) and in all (worker)."""
    waited, first, responses = 0.0, True, iter(call)
    try:
        while True:
            try:
                response = next(responses)
            except StopIteration:
                return
            finally:
                now = time.perf_counter()
                waited += now - started
                if first:
                    ctx.timings["worker_first_response"] = (ctx.timings.get("worker_first_response", 0.0)
                                                            + now - started)
                    first = False
            yield response
            started = time.perf_counter()
    finally:
        ctx.timings["worker"] = ctx.timings.get("worker", 0.0) + waited


_PASSED_ON = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: errors.Unimplemented,
}


WORKER_CALL_S = 120.0


def call(service: str, method, request, caller_remaining_s: float | None = None):
    """A unary worker call from a gateway handler, within the caller's deadline (time_remaining() of its
    context) and at most WORKER_CALL_S; the worker's status reaches the client, naming the service."""
    timeout = WORKER_CALL_S if caller_remaining_s is None else max(0.0, min(WORKER_CALL_S, caller_remaining_s))
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as error:
        kind = _PASSED_ON.get(error.code(), errors.Unavailable)
        raise kind(f"{service}: {error.details()}") from None
