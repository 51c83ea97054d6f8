"""`python -m services.<name>`: settings from the environment, logging, then serve until SIGTERM."""

from __future__ import annotations

from services.common.logs import configure_logging
from services.common.server import Register, serve
from services.common.settings import Settings


def run(service_name: str, register: Register, settings: Settings | None = None) -> None:
    settings = settings or Settings.from_env()
    configure_logging(settings, service_name)
    serve(service_name, settings, register)
