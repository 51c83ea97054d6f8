"""Logging setup shared by every service: JSON lines (or plain text) on stderr, secrets scrubbed.

Use `log.info("job started", extra={"job_id": job.id})`; extra fields become JSON keys
(or `key=value` pairs in text mode). Lines written inside a trace carry its `trace_id`, and lines written
while a job runs (`with job_scope(job.id):`) its `job_id`, without the caller passing them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Iterator

from services.common.settings import Settings
from services.common.telemetry.tracing import current_trace_id

REDACTED = "[REDACTED]"
# extra-field names whose values are never written, whatever they hold
_SECRET_KEY_PARTS = ("token", "secret", "password", "authorization", "credential")
# attributes every LogRecord has; anything else on a record came from `extra=`
_RECORD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_JOB_ID: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="")


@contextlib.contextmanager
def job_scope(job_id: str) -> Iterator[None]:
    """Log lines written in the block (in this thread) carry job_id."""
    token = _JOB_ID.set(job_id)
    try:
        yield
    finally:
        _JOB_ID.reset(token)


class _Formatter(logging.Formatter):
    def __init__(self, service: str, fmt: str, secrets: list[str]):
        super().__init__()
        self.service, self.fmt = service, fmt
        # longest first so a secret containing another is replaced whole
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        extras = {
            key: REDACTED if any(part in key.lower() for part in _SECRET_KEY_PARTS) else value
            for key, value in vars(record).items()
            if key not in _RECORD_ATTRS and not key.startswith("_")
        }
        for key, value in (("trace_id", current_trace_id()), ("job_id", _JOB_ID.get())):
            if value:
                extras.setdefault(key, value)
        ts = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        msg = record.getMessage()
        exc = self.formatException(record.exc_info) if record.exc_info else None
        if self.fmt == "json":
            entry = {"ts": ts, "level": record.levelname, "service": self.service, "logger": record.name, "msg": msg}
            entry.update({k: v for k, v in extras.items() if k not in entry})
            if exc:
                entry["exc"] = exc
            line = json.dumps(entry, default=str)
        else:
            pairs = "".join(f" {k}={v}" for k, v in extras.items())
            line = f"{ts} {record.levelname:<7} {self.service} {record.name}: {msg}{pairs}"
            if exc:
                line += "\n" + exc
        # last line of defence: a secret value must never reach the log, whatever logged it
        for secret in self.secrets:
            line = line.replace(secret, REDACTED)
        return line


_handler: logging.Handler | None = None


def configure_logging(settings: Settings, service_name: str) -> logging.Logger:
    """Route all logging to stderr in settings.log_format; returns the service's logger.

    Safe to call more than once (tests): the previous handler installed here is replaced.
    """
    global _handler
    fmt = settings.log_format.lower()
    if fmt not in ("json", "text"):
        fmt = "json"
    secrets = [settings.auth_token, settings.internal_token, settings.s3_secret_key]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(service_name, fmt, secrets))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    level = logging.getLevelName(settings.log_level.upper())
    root.setLevel(level if isinstance(level, int) else logging.INFO)
    _handler = handler
    return logging.getLogger(f"workbench.{service_name}")
