"""OpenTelemetry traces: one trace per request, from the client through the gateway, its jobs, the workers and
their S3 calls.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: then configure()
installs the SDK's TracerProvider exporting over OTLP/gRPC (the other OTEL_* variables apply as usual).
Off, the API stays its no-op self and every hook here returns after one check (tracer() is None).

The context travels in gRPC metadata (`traceparent`, W3C); a job keeps its submitting request's traceparent
in the catalog and its run continues that trace (services/gateway/jobs.py).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, Span, SpanKind, Status, StatusCode

_cached: tuple[object, trace.Tracer | None] = (None, None)


def configure(service_name: str) -> bool:
    """Install an exporting TracerProvider when an OTLP endpoint is configured; True when it did."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    # imported only here: a service without tracing never loads the SDK or the exporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or f"workbench-{service_name}"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def tracer() -> trace.Tracer | None:
    """The tracer of the installed provider; None while none is (tracing off): the hooks' one check."""
    global _cached
    provider = trace.get_tracer_provider()
    if provider is not _cached[0]:
        recording = not isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider))
        _cached = (provider, provider.get_tracer("workbench") if recording else None)
    return _cached[1]


def server_span(method: str, metadata: Sequence[tuple[str, str | bytes]] | None) -> Span | None:
    """A SERVER span for an RPC ("/pkg.Service/Method"), child of the caller's traceparent when it sent one."""
    current = tracer()
    if current is None:
        return None
    carrier = {key: value for key, value in (metadata or ()) if isinstance(value, str)}
    service, _, name = method.lstrip("/").partition("/")
    return current.start_span(method.lstrip("/"), context=propagate.extract(carrier), kind=SpanKind.SERVER,
                              attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name})


class activated:
    """`with activated(span):` span current for the block (its children and log lines see it); nothing when
    span is None. A class, not a generator: every RPC enters one, tracing on or off."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span | None):
        self._span, self._token = span, None

    def __enter__(self) -> None:
        if self._span is not None:
            self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)


def end_rpc(span: Span | None, code_name: str) -> None:
    if span is None:
        return
    span.set_attribute("rpc.grpc.status_code", code_name)
    if code_name != "OK":
        span.set_status(Status(StatusCode.ERROR, code_name))
    span.end()


def child_span(name: str, **attributes: str | int) -> Span | None:
    """A span under the current one, or None when there is none: work outside any request (a background
    purge, a pool thread nobody handed the context to) makes no trace of its own."""
    current = tracer()
    if current is None or not trace.get_current_span().is_recording():
        return None
    return current.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def traceparent() -> str | None:
    """The current span as a W3C traceparent (to store on a job), or None without one."""
    if tracer() is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def trace_id_of(parent: str | None) -> str:
    """The 32 hex digits of a traceparent's trace ("00-<trace>-<span>-<flags>"); "" for none."""
    return parent.split("-")[1] if parent else ""


def current_trace_id() -> str:
    """The current span's trace id, for log lines; "" outside any trace."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else ""


@contextlib.contextmanager
def resumed(parent: str | None, name: str, **attributes: str) -> Iterator[None]:
    """A span continuing the trace of a stored traceparent (a job's run, on any gateway), current for the
    block; nothing when tracing is off or there is no traceparent."""
    current = tracer()
    if current is None or not parent:
        yield
        return
    context = propagate.extract({"traceparent": parent})
    with current.start_as_current_span(name, context=context, kind=SpanKind.INTERNAL, attributes=attributes):
        yield


def outgoing_metadata(metadata: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]] | None:
    """metadata plus the current context's traceparent (a call to another service continues the trace)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return None if metadata is None else list(metadata)
    return [m for m in (metadata or ()) if m[0] not in carrier] + list(carrier.items())
