"""`python -m services.<name>`: settings from the environment, logging, then serve until SIGTERM."""

from __future__ import annotations

from services.common.logs import configure_logging
from services.common.server import Register, serve
from services.common.settings import Settings
from services.common.telemetry import tracing


def run(service_name: str, register: Register, settings: Settings | None = None) -> None:
    settings = settings or Settings.from_env()
    configure_logging(settings, service_name)
    tracing.configure(service_name)  # before the server and its channels are made: they ask whether it is on
    serve(service_name, settings, register)
