"""Runs the web console: `python -m services.web` (WORKBENCH_WEB_LISTEN, WORKBENCH_ADDRESS)."""

import uvicorn

from services.common.logs import configure_logging
from services.common.settings import Settings
from services.common.telemetry import metrics
from services.web.app import create_app
from workbench import WorkbenchClient

if __name__ == "__main__":
    settings = Settings.from_env()
    configure_logging(settings, "web")
    metrics.serve(settings.metrics_listen)  # the process's own figures (CPU, memory, garbage collection)
    host, _, port = settings.web_listen.rpartition(":")
    gateway = WorkbenchClient(settings.address, token="", tls_ca=settings.gateway_tls_ca or None)
    # log_config=None: uvicorn logs through the service's JSON handler; access lines carry paths only
    # (never cookies, so never the token)
    uvicorn.run(create_app(gateway), host=host or "127.0.0.1", port=int(port), log_config=None,
                proxy_headers=True, timeout_graceful_shutdown=int(settings.grace_seconds))
