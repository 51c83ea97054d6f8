"""Server interceptors (domain errors -> gRPC status, bearer-token auth) and the client-side token helper.

Domain code raises workbench_runtime.errors.*; only this module knows how they look on the wire.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import uuid
from typing import Any, Callable

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from workbench_runtime import errors

log = logging.getLogger(__name__)

ERROR_DOMAIN = "workbench"

# subclasses of these map like their parent (status_code_for walks the MRO)
STATUS_CODES: dict[type[errors.WorkbenchError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}

# Messages echo user input (a cfg line, an archive member's name): they travel in trailers, which
# a peer refuses above 16 KiB (8 KiB soft), percent-encoded and once more in the details; keep them short.
MAX_MESSAGE_BYTES = 1024

# these stay reachable without a token so load balancers, probes and grpcurl work
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def status_code_for(error: errors.WorkbenchError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.UNKNOWN  # a bare WorkbenchError: message is safe, the kind is not known


def clip_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """message, or when its UTF-8 is over limit bytes its start and its end (where the verdict often is)."""
    data = message.encode()
    if len(data) <= limit:
        return message
    keep = (limit - 48) // 2
    head, tail = data[:keep].decode(errors="ignore"), data[-keep:].decode(errors="ignore")
    return f"{head} ...({len(message) - len(head) - len(tail)} characters cut)... {tail}"


def to_grpc_status(error: errors.WorkbenchError) -> grpc.Status:
    """The status (code, message, google.rpc details in trailers) a domain error becomes."""
    code = status_code_for(error)
    message = clip_message(error.message)
    details: list[Any] = []
    if isinstance(error, errors.InvalidArgument) and error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=message)
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if error.reason:
        details.append(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
    if isinstance(error, errors.ResourceExhausted) and error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    proto = status_pb2.Status(code=code.value[0], message=message, details=packed)
    return rpc_status.to_status(proto)


# -- server side -----------------------------------------------------------------------------


def rebuild_handler(handler: grpc.RpcMethodHandler, wrap: Callable[[Callable, bool], Callable]
                    ) -> grpc.RpcMethodHandler:
    """The same handler with its behavior passed through wrap(behavior, response_streaming): what every
    server interceptor here (errors, auth, slots) does to a handler."""
    kinds = {
        (False, False): (grpc.unary_unary_rpc_method_handler, handler.unary_unary),
        (False, True): (grpc.unary_stream_rpc_method_handler, handler.unary_stream),
        (True, False): (grpc.stream_unary_rpc_method_handler, handler.stream_unary),
        (True, True): (grpc.stream_stream_rpc_method_handler, handler.stream_stream),
    }
    factory, behavior = kinds[(handler.request_streaming, handler.response_streaming)]
    wrapped = wrap(behavior, handler.response_streaming)
    # grpc looks these up on the behavior (health Watch is non-blocking); keep them
    for attr in ("experimental_non_blocking", "experimental_thread_pool"):
        if hasattr(behavior, attr):
            setattr(wrapped, attr, getattr(behavior, attr))
    return factory(wrapped, request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)


def _aborted_already(exc: Exception, context: grpc.ServicerContext) -> bool:
    # context.abort() sets the code and raises a bare Exception(); grpc has no public flag for it
    return type(exc) is Exception and not exc.args and context.code() not in (None, grpc.StatusCode.OK)


class ErrorInterceptor(grpc.ServerInterceptor):
    """Turns exceptions raised by handlers (unary or streaming, even mid-stream) into statuses."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        def fail(exc: Exception, context: grpc.ServicerContext):
            if _aborted_already(exc, context) or not context.is_active():
                raise exc  # handler chose its status, or the client has gone: nothing to map
            if isinstance(exc, NotImplementedError):  # a generated base-class method: not built yet
                exc = errors.Unimplemented(f"{method} is not implemented by this release of the service")
            if isinstance(exc, errors.WorkbenchError):
                status = to_grpc_status(exc)
                log.debug("%s -> %s: %s", method, status.code.name, exc.message)
                context.abort_with_status(status)  # raises
            error_id = uuid.uuid4().hex
            # the trace stays here; the client only gets the id to quote
            log.error("unhandled exception in %s (id=%s)", method, error_id, exc_info=exc,
                      extra={"error_id": error_id, "method": method})
            context.abort(grpc.StatusCode.INTERNAL, f"internal error; see server logs, id={error_id}")

        def wrap(behavior, response_streaming):
            if response_streaming and not getattr(behavior, "experimental_non_blocking", False):
                def streaming(request, context):
                    try:
                        yield from behavior(request, context)
                    except Exception as exc:
                        fail(exc, context)
                return streaming

            def call(request, context, *callback):  # *callback: non-blocking streams pass a sender
                try:
                    return behavior(request, context, *callback)
                except Exception as exc:
                    fail(exc, context)
            return call

        return rebuild_handler(handler, wrap)


def _token_digest(value: str) -> bytes:
    # compare fixed-size digests so neither content nor length leaks through timing
    return hashlib.sha256(value.encode()).digest()


class AuthInterceptor(grpc.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every RPC except health and reflection."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("AuthInterceptor needs a non-empty token; leave it out to disable auth")
        self._expected = _token_digest(token)

    def _problem(self, metadata) -> str | None:
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if not values:
            return "missing credentials: send metadata 'authorization: Bearer <token>'"
        scheme, _, presented = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return "malformed authorization metadata: expected 'Bearer <token>'"
        if not hmac.compare_digest(_token_digest(presented.strip()), self._expected):
            return "invalid bearer token"
        return None

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(OPEN_METHOD_PREFIXES):
            return continuation(handler_call_details)
        problem = self._problem(handler_call_details.invocation_metadata)
        if problem is None:
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: still refuse before saying it does not exist
            handler = grpc.stream_stream_rpc_method_handler(lambda it, ctx: iter(()))

        def deny(behavior, response_streaming):
            def refuse(request, context, *callback):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)
            return refuse

        return rebuild_handler(handler, deny)


# -- client side -----------------------------------------------------------------------------


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the token; empty when there is no token."""
    return (("authorization", f"Bearer {token}"),) if token else ()


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class MetadataClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """A channel interceptor that rewrites every call's details (metadata) the same way, whatever its arity:
    subclasses say how in _details."""

    def _details(self, d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        raise NotImplementedError

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def with_metadata(d: grpc.ClientCallDetails, metadata) -> grpc.ClientCallDetails:
    return _CallDetails(d.method, d.timeout, metadata, d.credentials, getattr(d, "wait_for_ready", None),
                        getattr(d, "compression", None))


class BearerTokenInterceptor(MetadataClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call on a channel (grpc.intercept_channel)."""

    def __init__(self, token: str):
        self._metadata = bearer_metadata(token)

    def _details(self, d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return with_metadata(d, [m for m in (d.metadata or ()) if m[0] != "authorization"] + list(self._metadata))
