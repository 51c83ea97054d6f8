"""Client channels with the same transport settings the servers use (TLS, keepalive, size limits, token)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from services.common.interceptors import BearerTokenInterceptor
from services.common.server import transport_options
from services.common.settings import Settings
from services.common.telemetry import tracing
from services.common.telemetry.rpc import TracingClientInterceptor


# Every call: retried while the worker is unreachable (a restarting pod), but never once it has answered
# (then the call is committed and a broken stream fails the job); and no call outlives WORKER_DEADLINE.
WORKER_DEADLINE = "21600s"
SERVICE_CONFIG = json.dumps({
    # a dns:/// address of a headless Service resolves to every pod; spread calls across them
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{}],
        "timeout": WORKER_DEADLINE,
        "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.5s", "maxBackoff": "4s", "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
})


def channel_options(settings: Settings) -> list[tuple[str, int | str]]:
    return [
        *transport_options(settings),
        # keep pinging while a long worker stream sends nothing (calibration can be quiet for minutes)
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.service_config", SERVICE_CONFIG),
        # a restarted worker is dialled again within seconds, not after minutes of backoff
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def channel(addr: str, settings: Settings, token: str | None = None) -> grpc.Channel:
    """Dial addr ("host:port"): TLS when settings.tls_ca is set, plain otherwise.

    With TLS, settings.tls_cert/tls_key (when set) are presented as the client certificate, so
    the gateway can reach workers that require mutual TLS. A token adds a bearer header to
    every call (the gateway passes settings.internal_token when dialing workers). With tracing on (configured
    before the channel is made), every call carries the caller's trace context.
    """
    options = channel_options(settings)
    if settings.tls_ca:
        key = Path(settings.tls_key).read_bytes() if settings.tls_enabled else None
        cert = Path(settings.tls_cert).read_bytes() if settings.tls_enabled else None
        credentials = grpc.ssl_channel_credentials(Path(settings.tls_ca).read_bytes(), key, cert)
        ch = grpc.secure_channel(addr, credentials, options)
    else:
        ch = grpc.insecure_channel(addr, options)
    interceptors = [BearerTokenInterceptor(token)] if token else []
    if tracing.tracer() is not None:  # decided once, here: with tracing off, calls pay nothing for it
        interceptors.append(TracingClientInterceptor())
    return grpc.intercept_channel(ch, *interceptors) if interceptors else ch
