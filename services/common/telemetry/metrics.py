"""Every Prometheus metric the services expose, and the one-line hooks that feed them.

Each service serves its process's registry over HTTP on settings.metrics_listen ("" = off): see serve().
Names follow Prometheus' conventions (base units, `_total` counters); deploy/grafana/workbench.json reads
them and tests/observability checks that every expression there names one of these.

    workbench_rpc_requests_total{service,method,code}   RPCs served, by gRPC status (streams: when they end)
    workbench_rpc_duration_seconds{service,method}      their latency
    workbench_jobs_finished_total{kind,state}           jobs ended (succeeded, failed, cancelled)
    workbench_job_duration_seconds{kind}                started to ended
    workbench_job_queue_wait_seconds{kind}              submitted to claimed
    workbench_jobs_queued, workbench_jobs_running       the catalog's queue now (all gateways), read on scrape
    workbench_worker_slots, workbench_worker_slots_busy{service}   a worker's slots and those in use
    workbench_s3_requests_total{operation,status}       S3 requests (HTTP status, or "error" without one)
    workbench_s3_request_duration_seconds{operation}    until the response's headers (retries included)
    workbench_db_transaction_duration_seconds{mode}     catalog transactions (read/write), waiting for a turn included
    workbench_db_statement_duration_seconds{statement}  catalog statements, by verb (SELECT, INSERT...)
    workbench_benchmark_fps{project_id}                 each project's last benchmark throughput
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# no `<name>_created` series beside every counter and histogram series: a series each that no query reads, and
# samples every scrape formats (the gateway's scrape after a flow: 817 samples with them, 760 without)
disable_created_metrics()

# RPCs and S3/database calls: a millisecond to minutes (worker streams run long); jobs: seconds to hours
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RPC = _FAST + (120.0, 300.0, 900.0, 1800.0, 3600.0)
_JOB = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)

RPC_REQUESTS = Counter("workbench_rpc_requests", "RPCs served, by gRPC service, method and status code",
                       ["service", "method", "code"])
RPC_SECONDS = Histogram("workbench_rpc_duration_seconds", "Time from an RPC's start to its status, in seconds",
                        ["service", "method"], buckets=_RPC)
JOBS_FINISHED = Counter("workbench_jobs_finished", "Jobs ended, by kind and terminal state", ["kind", "state"])
JOB_SECONDS = Histogram("workbench_job_duration_seconds", "Jobs' time from start to end, in seconds", ["kind"],
                        buckets=_JOB)
JOB_WAIT_SECONDS = Histogram("workbench_job_queue_wait_seconds", "Jobs' time in the queue, submitted to claimed",
                             ["kind"], buckets=_JOB)
SLOTS = Gauge("workbench_worker_slots", "A worker's slots: long calls it runs at once", ["service"])
SLOTS_BUSY = Gauge("workbench_worker_slots_busy", "A worker's slots in use now", ["service"])
S3_REQUESTS = Counter("workbench_s3_requests", "S3 requests, by operation and HTTP status", ["operation", "status"])
S3_SECONDS = Histogram("workbench_s3_request_duration_seconds", "S3 requests' time to the response's headers",
                       ["operation"], buckets=_FAST)
DB_TRANSACTION_SECONDS = Histogram("workbench_db_transaction_duration_seconds",
                                   "Catalog transactions' time, waiting for a turn included", ["mode"], buckets=_FAST)
DB_STATEMENT_SECONDS = Histogram("workbench_db_statement_duration_seconds", "Catalog statements' time, by verb",
                                 ["statement"], buckets=_FAST)
BENCHMARK_FPS = Gauge("workbench_benchmark_fps", "Throughput of each project's last benchmark, in frames per second",
                      ["project_id"])


# -- serving ---------------------------------------------------------------------------------


class MetricsServer:
    """The registry over HTTP (GET /metrics) on its own thread; port is the one bound (listen may say 0)."""

    def __init__(self, listen: str):
        host, _, port = listen.rpartition(":")
        self._httpd, self._thread = start_http_server(int(port), host.strip("[]") or "0.0.0.0")
        self.port: int = self._httpd.server_port
        self.address = f"{host}:{self.port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(listen: str) -> MetricsServer | None:
    """Serve metrics on listen ("host:port"); None when listen is empty (metrics off)."""
    return MetricsServer(listen) if listen else None


# -- RPCs (services/common/telemetry/rpc.py) -------------------------------------------------


class RpcRecorder:
    """One method's series, looked up once: recording an RPC is then two dictionary hits and an observe."""

    __slots__ = ("service", "method", "_seconds", "_codes")

    def __init__(self, service: str, method: str):
        self.service, self.method = service, method
        self._seconds = RPC_SECONDS.labels(service, method)
        self._codes: dict[str, Counter] = {}

    def done(self, code: str, seconds: float) -> None:
        counter = self._codes.get(code)
        if counter is None:
            counter = self._codes[code] = RPC_REQUESTS.labels(self.service, self.method, code)
        counter.inc()
        self._seconds.observe(seconds)


# -- jobs (services/gateway/jobs.py) -----------------------------------------------------------


def _label(enum_name: str, prefix: str) -> str:
    return enum_name.removeprefix(prefix).lower()


def job_claimed(kind: str, waited_s: float) -> None:
    JOB_WAIT_SECONDS.labels(_label(kind, "JOB_KIND_")).observe(waited_s)


def job_finished(kind: str, state: str, seconds: float | None) -> None:
    """A job ended; seconds from its start (None: it never started)."""
    kind = _label(kind, "JOB_KIND_")
    JOBS_FINISHED.labels(kind, _label(state, "JOB_STATE_")).inc()
    if seconds is not None:
        JOB_SECONDS.labels(kind).observe(seconds)


class _JobQueue(Collector):
    """The catalog's queued and running jobs, counted when scraped (no work between scrapes), from the gateway
    that started last in this process."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], tuple[int, int]]] = []

    def describe(self) -> Iterable:
        return []  # counted on scrape only: registering must not query a database

    def collect(self) -> Iterable[GaugeMetricFamily]:
        if not self.sources:
            return
        try:
            queued, running = self.sources[-1]()
        except Exception as exc:  # a scrape during an outage: leave the series out rather than fail the scrape
            log.warning("job queue not counted for metrics (%s)", exc)
            return
        yield GaugeMetricFamily("workbench_jobs_queued", "Jobs waiting in the catalog's queue (all gateways)",
                                value=queued)
        yield GaugeMetricFamily("workbench_jobs_running", "Jobs running now (all gateways)", value=running)


_JOB_QUEUE = _JobQueue()
REGISTRY.register(_JOB_QUEUE)


def count_jobs_with(source: Callable[[], tuple[int, int]]) -> Callable[[], None]:
    """Scrapes report source()'s (queued, running) until the returned function is called."""
    _JOB_QUEUE.sources.append(source)
    return lambda: _JOB_QUEUE.sources.remove(source)


# -- slots (services/common/slots.py) ------------------------------------------------------------


def slots(service: str, busy: int, count: int) -> None:
    SLOTS.labels(service).set(count)
    SLOTS_BUSY.labels(service).set(busy)


# -- S3 (services/common/object_store.py) --------------------------------------------------------


def s3_request(operation: str, status: int | None, seconds: float) -> None:
    S3_REQUESTS.labels(operation, str(status) if status else "error").inc()
    S3_SECONDS.labels(operation).observe(seconds)


# -- the catalog database (services/gateway/db.py) --------------------------------------------------


class db_transaction:
    """`with db_transaction("write"):` times the block (a class, not a generator: it runs on every transaction)."""

    __slots__ = ("_histogram", "_start")

    def __init__(self, mode: str):
        self._histogram = DB_TRANSACTION_SECONDS.labels(mode)

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._histogram.observe(time.perf_counter() - self._start)


def time_statements(engine) -> None:
    """Time every statement the engine runs (SQLAlchemy's cursor events), labelled by its verb."""
    from sqlalchemy import event

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn, _cursor, _statement, _parameters, _context, _executemany):
        conn.info.setdefault("workbench_statement_start", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn, _cursor, statement, _parameters, _context, _executemany):
        started = conn.info["workbench_statement_start"].pop()
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "EMPTY"
        DB_STATEMENT_SECONDS.labels(verb).observe(time.perf_counter() - started)

    @event.listens_for(engine, "handle_error")
    def failed(exception_context):  # no after_cursor_execute then: forget the start
        conn = exception_context.connection
        if conn is not None and conn.info.get("workbench_statement_start"):
            conn.info["workbench_statement_start"].pop()


# -- benchmarks (services/gateway/measurements.py) ---------------------------------------------------


def benchmark_fps(project_id: str, fps: float) -> None:
    BENCHMARK_FPS.labels(project_id).set(fps)
