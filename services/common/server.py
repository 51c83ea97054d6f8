"""The one gRPC server bootstrap every Workbench service uses.

    registrar = registrar_for(ConverterServicer, converter_pb2_grpc.add_ConverterServiceServicer_to_server,
                              "workbench.v1.ConverterService")
    serve("converter", Settings.from_env(), registrar(settings))   # blocks until SIGTERM/SIGINT

(`registrar(settings)` is the `register` callback: `register(server)` adds the service and names it.)

It adds health (overall "" plus each registered service), reflection, keepalive, message size
limits, error mapping, bearer-token auth when a token is set, and TLS when a cert is set.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Union

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.interceptors import AuthInterceptor, ErrorInterceptor
from services.common.object_store import ObjectStore
from services.common.settings import Settings
from services.common.slots import Slots
from services.common.telemetry import metrics
from services.common.telemetry.rpc import TelemetryInterceptor

log = logging.getLogger(__name__)


@dataclass
class Registration:
    """What a register callback returns when its service has work of its own around the server's life."""

    services: list[str]
    on_start: Callable[["HealthServicer"], None] | None = None  # once serving; may steer health
    on_stop: Callable[[], None] | None = None  # once the server has stopped


Register = Callable[[grpc.Server], Union[Iterable[str], Registration]]


def registrar_for(servicer: Callable[[Settings, ObjectStore], Any], add_to_server: Callable[[Any, grpc.Server], None],
                  service_name: str, *, runs: Callable[[Any], Any] | None = None) -> Callable[[Settings], Register]:
    """A service's `registrar(settings) -> register`, from what differs between services: its servicer (built as
    `servicer(settings, store)`, with the object store the settings name, when a server is made), the generated
    add_*_to_server function and its full service name. `runs(servicer)`, when given, is what the service runs
    beside the server (the gateway's job runner): its start(health) once serving, its stop() once stopped."""

    def registrar(settings: Settings) -> Register:
        def register(server: grpc.Server) -> Registration:
            made = servicer(settings, ObjectStore.from_settings(settings))
            add_to_server(made, server)
            if runs is None:
                return Registration([service_name])
            running = runs(made)
            return Registration([service_name], on_start=running.start, on_stop=running.stop)

        return register

    return registrar
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 Check and (non-blocking) Watch.

    Not grpc_health's HealthServicer: it sends Watch updates while holding the lock that a
    closing Watch's callback needs on grpc's single event thread, so a Watch ending during
    set()/enter_graceful_shutdown() deadlocks shutdown (hit in our tests; grpc/grpc#43403).
    Here nothing is sent while `_lock` is held; `_send_lock` keeps updates in order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _status and _watchers; never held while sending
        self._send_lock = threading.Lock()
        self._status: dict[str, int] = {"": SERVING}
        self._watchers: dict[str, set[Callable]] = {}
        self._shutting_down = False

    def Check(self, request, context):
        with self._lock:
            status = self._status.get(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request, context, send_response_callback):
        service, send = request.service, send_response_callback
        with self._send_lock:
            with self._lock:
                self._watchers.setdefault(service, set()).add(send)
                status = self._status.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            if context.add_callback(lambda: self._forget(service, send)):
                send(health_pb2.HealthCheckResponse(status=status))
            else:  # the call already ended
                self._forget(service, send)

    # grpc passes a send callback instead of tying a worker thread to each open Watch
    Watch.experimental_non_blocking = True  # type: ignore[attr-defined]

    def _forget(self, service: str, send: Callable) -> None:
        # runs when the call has ended: nothing left to send on it
        with self._lock:
            self._watchers.get(service, set()).discard(send)

    def set(self, service: str, status: int) -> None:
        with self._send_lock:
            with self._lock:
                if self._shutting_down:
                    return
                self._status[service] = status
                watchers = list(self._watchers.get(service, ()))
            for send in watchers:
                send(health_pb2.HealthCheckResponse(status=status))

    def enter_graceful_shutdown(self) -> None:
        """Everything NOT_SERVING for good; open Watches get that, then end, so they do not hold
        the server for the whole grace period."""
        with self._send_lock:
            with self._lock:
                if self._shutting_down:
                    return
                self._shutting_down = True
                self._status = dict.fromkeys(self._status, NOT_SERVING)
                watchers = [send for sends in self._watchers.values() for send in sends]
            for send in watchers:
                send(health_pb2.HealthCheckResponse(status=NOT_SERVING))
                send(None)  # ends the Watch with OK


def transport_options(settings: Settings) -> list[tuple[str, int]]:
    """Message-size limits and keepalive pings, the same on servers and client channels."""
    keepalive_ms = int(settings.keepalive_seconds * 1000)
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        # ping idle connections so dead peers (restarted pods, dropped NAT entries) are noticed
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", min(20_000, keepalive_ms)),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def server_options(settings: Settings) -> list[tuple[str, int]]:
    keepalive_ms = int(settings.keepalive_seconds * 1000)
    return [
        *transport_options(settings),
        # accept client keepalive pings (the SDK and channel() ping every 30 s, even when idle);
        # the default (5 min) would answer them with GOAWAY "too_many_pings"
        ("grpc.http2.min_ping_interval_without_data_ms", min(5_000, keepalive_ms)),
        # fail loudly when the port is taken instead of silently sharing it
        ("grpc.so_reuseport", 0),
    ]


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials when a cert and key are configured; a client CA makes it mutual TLS."""
    if not settings.tls_enabled:
        return None
    pair = (Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


class ServiceServer:
    """A started-on-demand gRPC server: start() -> port, shutdown(grace), wait()."""

    def __init__(self, service_name: str, settings: Settings, register: Register, *, token: str | None = None):
        """token None picks the usual one: auth_token for the gateway, internal_token for workers;
        an empty token turns auth off."""
        self.service_name, self.settings = service_name, settings
        if token is None:
            token = settings.auth_token if service_name == "gateway" else settings.internal_token
        # telemetry first: it sees every RPC, those auth refuses too, and the status errors are mapped to
        telemetry = TelemetryInterceptor()
        interceptors: list[grpc.ServerInterceptor] = [telemetry, *([AuthInterceptor(token)] if token else [])]
        interceptors.append(ErrorInterceptor())
        # a worker with slots refuses long calls beyond them, so the gateway takes them to another replica
        self.slots = Slots(service_name, settings.slots) if settings.slots and service_name != "gateway" else None
        if self.slots:
            interceptors.append(self.slots)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix=service_name),
            interceptors=interceptors,
            options=server_options(settings),
        )
        registered = register(self.server)
        if not isinstance(registered, Registration):
            registered = Registration(list(registered))
        self.registration = registered
        self.service_names = list(registered.services)
        telemetry.services.update(self.service_names)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        for name in ["", *self.service_names]:
            self.health.set(name, SERVING)
        reflection.enable_server_reflection([*self.service_names, HEALTH_SERVICE, reflection.SERVICE_NAME], self.server)
        self.port: int | None = None
        self.metrics: metrics.MetricsServer | None = None  # Prometheus' endpoint, when settings.metrics_listen
        self._stopping = threading.Lock()

    @property
    def address(self) -> str:
        """host:port actually bound (port 0 in settings.listen resolved)."""
        host = self.settings.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    def start(self) -> int:
        credentials = server_credentials(self.settings)
        listen = self.settings.listen
        try:
            if credentials:
                self.port = self.server.add_secure_port(listen, credentials)
            else:
                self.port = self.server.add_insecure_port(listen)
        except RuntimeError as exc:  # grpc raises when it cannot bind
            raise OSError(f"cannot listen on {listen}: {exc}") from None
        if not self.port:
            raise OSError(f"cannot listen on {listen}")
        self.server.start()
        self.metrics = metrics.serve(self.settings.metrics_listen)
        if self.registration.on_start:
            self.registration.on_start(self.health)
        log.info("%s serving on %s", self.service_name, self.address,
                 extra={"address": self.address, "port": self.port, "tls": credentials is not None,
                        "mutual_tls": bool(self.settings.tls_client_ca), "services": self.service_names,
                        "metrics": self.metrics.address if self.metrics else ""})
        return self.port

    def shutdown(self, grace: float | None = None) -> None:
        """Health to NOT_SERVING first (load balancers stop routing here), then stop accepting
        RPCs and give in-flight ones `grace` seconds (settings.grace_seconds) before cancelling."""
        if not self._stopping.acquire(blocking=False):
            self.wait()  # another thread is already shutting down
            return
        grace = self.settings.grace_seconds if grace is None else grace
        log.info("%s shutting down (grace %.1fs)", self.service_name, grace)
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.registration.on_stop:
            self.registration.on_stop()
        if self.metrics:
            self.metrics.stop()
        log.info("%s stopped", self.service_name)

    stop = shutdown

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has terminated; False if timeout passed first."""
        return self.server.wait_for_termination(timeout)


def serve(service_name: str, settings: Settings, register: Register, *, token: str | None = None) -> None:
    """Run a service in the foreground until SIGTERM/SIGINT, then shut down gracefully.

    A second signal during the grace period cancels the remaining RPCs at once.
    """
    server = ServiceServer(service_name, settings, register, token=token)
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        if stop_requested.is_set():
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            server.server.stop(0)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    # shut down in a thread so the main thread stays free to receive a second signal
    while not stop_requested.wait(0.5):
        pass
    stopper = threading.Thread(target=server.shutdown, name="shutdown")
    stopper.start()
    while stopper.is_alive():
        stopper.join(0.2)
