"""Domain errors shared by every service.

Domain modules raise these and know nothing about gRPC; the server's error
interceptor (services.common.server) maps each class to one status code.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base of every error a client may see. The message must be safe to show."""

    def __init__(self, message: str, *, field: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field  # the request field at fault, for INVALID_ARGUMENT details
        self.reason = reason  # a short UPPER_SNAKE machine-readable reason, for ErrorInfo


class InvalidArgument(WorkbenchError):
    """The request itself is wrong; name the field."""


class NotFound(WorkbenchError):
    """A project, job, model, dataset or object does not exist."""


class AlreadyExists(WorkbenchError):
    """A create collided with an existing resource."""


class FailedPrecondition(WorkbenchError):
    """The request is well formed but the system is not in a state to serve it."""


class ResourceExhausted(WorkbenchError):
    """A limit was hit on purpose (size, queue length); the client may retry later."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class Unavailable(WorkbenchError):
    """A dependency (object store, another service) cannot be reached right now."""


class Unauthenticated(WorkbenchError):
    """Missing or wrong credentials."""


class PermissionDenied(WorkbenchError):
    """Authenticated but not allowed."""


class Cancelled(WorkbenchError):
    """The work was cancelled by a client."""


class DeadlineExceeded(WorkbenchError):
    """The work did not finish within its deadline."""


class Unimplemented(WorkbenchError):
    """The capability belongs to a later release of the service."""
