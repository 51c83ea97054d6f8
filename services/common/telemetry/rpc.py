"""The server interceptor that meters and traces every RPC, and the client one that passes the trace on.

Server side (first of services/common/server.py's interceptors, so it sees what auth refuses and the
status errors map to): the RPC's count by status code and its latency (metrics.py), and, with tracing on,
a SERVER span continuing the caller's traceparent (tracing.py), except for health checks and reflection.
Streams are counted when they end.
"""

from __future__ import annotations

import time

import grpc
from google.protobuf import descriptor_pool

from services.common.interceptors import MetadataClientInterceptor, rebuild_handler, with_metadata
from services.common.telemetry import metrics, tracing

OK, CANCELLED = grpc.StatusCode.OK.name, grpc.StatusCode.CANCELLED.name
ALWAYS_KNOWN = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
# probes (a kubelet asks every pod every few seconds) and tooling: counted, but no trace of their own each time
UNTRACED = tuple(f"/{service}/" for service in ALWAYS_KNOWN)


class TelemetryInterceptor(grpc.ServerInterceptor):
    def __init__(self) -> None:
        # only methods of served services get their own series (a caller cannot grow them with made-up names);
        # the server adds its services once they are registered
        self.services = set(ALWAYS_KNOWN)
        self._recorders: dict[str, metrics.RpcRecorder] = {}
        self._unknown = metrics.RpcRecorder("unknown", "unknown")

    def _recorder(self, method: str) -> metrics.RpcRecorder:
        recorder = self._recorders.get(method)
        if recorder is None:
            service, _, name = method.lstrip("/").partition("/")
            if service not in self.services or not _declared(service, name):
                return self._unknown  # e.g. a made-up method auth refused before grpc could say it does not exist
            recorder = self._recorders[method] = metrics.RpcRecorder(service, name)
        return recorder

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:  # grpc answers UNIMPLEMENTED itself
            return None
        method, recorder = handler_call_details.method, self._recorder(handler_call_details.method)
        metadata = handler_call_details.invocation_metadata
        traced = not method.startswith(UNTRACED)

        def opened():
            return tracing.server_span(method, metadata) if traced else None

        def ended(start: float, span, code: str) -> None:
            recorder.done(code, time.perf_counter() - start)
            tracing.end_rpc(span, code)

        def failed(context: grpc.ServicerContext) -> str:
            code = context.code()  # set by abort(): the error interceptor maps every exception to one
            return code.name if code is not None else grpc.StatusCode.UNKNOWN.name

        def wrap(behavior, response_streaming):
            if getattr(behavior, "experimental_non_blocking", False):  # WatchJob, health Watch: end after returning
                def non_blocking(request, context, send):
                    start, span = time.perf_counter(), opened()
                    closed = []  # the handler ended the stream (send(None)); else the client went away

                    def sending(response):
                        if response is None:
                            closed.append(True)
                        send(response)

                    def terminated():
                        code = context.code()
                        ended(start, span, code.name if code is not None else OK if closed else CANCELLED)

                    if not context.add_callback(terminated):  # already over
                        terminated()
                    with tracing.activated(span):
                        return behavior(request, context, sending)
                return non_blocking

            if response_streaming:
                def streaming(request, context):
                    start, span = time.perf_counter(), opened()
                    code = OK
                    try:
                        with tracing.activated(span):
                            yield from behavior(request, context)
                        code = context.code().name if context.code() is not None else OK
                    except GeneratorExit:  # the client went away mid-stream
                        code = CANCELLED
                        raise
                    except BaseException:
                        code = failed(context)
                        raise
                    finally:
                        ended(start, span, code)
                return streaming

            def unary(request, context):
                start, span = time.perf_counter(), opened()
                code = OK
                try:
                    with tracing.activated(span):
                        response = behavior(request, context)
                    code = context.code().name if context.code() is not None else OK
                    return response
                except BaseException:
                    code = failed(context)
                    raise
                finally:
                    ended(start, span, code)
            return unary

        return rebuild_handler(handler, wrap)


def _declared(service: str, method: str) -> bool:
    """Whether the loaded protos declare service.method."""
    try:
        return method in descriptor_pool.Default().FindServiceByName(service).methods_by_name
    except KeyError:
        return False


class TracingClientInterceptor(MetadataClientInterceptor):
    """Adds the current trace context (`traceparent`) to every call; channels get it only with tracing on."""

    def _details(self, d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return with_metadata(d, tracing.outgoing_metadata(d.metadata))
