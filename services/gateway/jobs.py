"""Jobs: long work that any gateway can run, observable event by event, cancellable, durable.

A job is a row holding the request that started it; its events and its finished steps are rows too.
Gateways claim queued jobs with a lease and renew it while they work (a heartbeat). When a gateway
dies its leases run out and another gateway (or the same one restarted) takes the job over: it runs
the job again from its request, skipping the steps already finished. A step cut short and run again
is harmless: the workers' outputs are content-addressed, and the records a job makes are written in
the same transaction as its end, by the lease holder only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import grpc
import sqlalchemy as sa
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy.engine import Connection

from services.common import pb
from workbench_runtime.errors import Cancelled, FailedPrecondition, Unavailable, Unimplemented, WorkbenchError
from services.common.interceptors import status_code_for
from services.common.logs import job_scope
from services.common.telemetry import metrics, tracing
from services.gateway import db as schema
from services.gateway.db import Database
from services.gateway.records import Records, new_id, validate_id, validate_request_id
from services.gateway.watches import TERMINAL, Send, Watch, Watches
from workbench.v1 import common_pb2

log = logging.getLogger(__name__)

# progress is stored when its stage changes, when it moved by PROGRESS_STEP, or PROGRESS_INTERVAL_S after
# the last stored: a watcher sees it move, and a job reporting every image does not write a row per image
PROGRESS_INTERVAL_S = 0.1
PROGRESS_STEP = 0.05
CLAIM_POLL_S = 0.5  # how often an idle gateway looks for queued jobs other gateways accepted
FINAL_SAVE_BACKOFF_S = (0.5, 10.0)  # first and longest wait between tries to store a job's end


def now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class JobFailed(WorkbenchError):
    """Ends a job as FAILED, naming the service at fault and the status it answered."""

    def __init__(self, message: str, service: str = "", code: grpc.StatusCode = grpc.StatusCode.UNKNOWN):
        super().__init__(message)
        self.service, self.code = service, code


class LeaseLost(Exception):
    """Another gateway holds the job now (or this one is stopping): stop without writing anything."""


Work = Callable[["JobContext", Message], "common_pb2.JobOutput | None"]


@dataclass(frozen=True)
class Handler:
    request_type: type[Message]
    run: Work


class JobContext:
    """What a job's work function sees: progress, cancellation, checkpointed steps and the records
    its success writes."""

    def __init__(self, manager: "JobManager", job: common_pb2.Job, traceparent: str | None = None):
        self._manager, self.job = manager, job
        self.traceparent = traceparent  # the submitting request's trace, which the run continues
        self._cancel = threading.Event()
        self._lost = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._writes: list[Callable[[Connection], None]] = []
        self._stored_progress = (0.0, "", 0.0)  # when, at which stage and how far progress was last stored
        # seconds this attempt spent per stage outside the handler's own work: shown in the terminal event's
        # progress metrics as job_<stage>_s (see JobManager._finish)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the time the block takes to the job's timing of stage."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._lost.is_set():
            raise LeaseLost(self.job.id)
        if self.cancelled:
            raise Cancelled("cancelled by request")

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Register a callback that stops in-flight work (e.g. cancels a worker RPC) on CancelJob."""
        self._callbacks.append(callback)
        if self.cancelled or self._lost.is_set():
            callback()

    def progress(self, stage: str, fraction: float | None = None, message: str = "", **metrics: float) -> None:
        self.report(pb.progress(stage, fraction, message, **metrics))

    def report(self, progress: common_pb2.Progress) -> None:
        self.job.progress.CopyFrom(progress)
        last_time, last_stage, last_fraction = self._stored_progress
        if (progress.stage == last_stage and time.monotonic() - last_time < PROGRESS_INTERVAL_S
                and progress.fraction - last_fraction < PROGRESS_STEP):
            return
        self._stored_progress = (time.monotonic(), progress.stage, progress.fraction)
        event = self._manager._event(self.job)
        try:
            with self.timed("records"):
                self._manager._append(self, event)
        except Unavailable as exc:  # best effort: an outage must not end work the workers are still doing
            self.job.last_sequence -= 1  # the sequence goes to the next stored event: watchers see no gap
            log.warning("job %s: progress not stored (%s)", self.job.id, exc.message)

    def step(self, name: str, result_type: type[Message], run: Callable[[], Message]) -> Message:
        """run()'s result, stored; a resumed job gets the stored one instead of running it again."""
        with self.timed("records"):
            stored = self._manager._step(self.job.id, name)
        if stored is not None:
            return result_type.FromString(stored)
        result = run()
        self.check_cancelled()
        try:
            with self.timed("records"):
                self._manager._save_step(self, name, result)
        except Unavailable as exc:  # only a shortcut for a resumed job: its loss costs a rerun, not the job
            log.warning("job %s: step %s not stored (%s)", self.job.id, name, exc.message)
        return result

    def wait_for(self, service: str | None) -> int | None:
        """Mark the job as waiting for a free slot of service (None: no longer); returns how many jobs
        wait for it ahead of this one, on every gateway (None while the database is unreachable)."""
        try:
            with self.timed("records"):
                return self._manager._wait_for(self.job.id, service)
        except Unavailable as exc:
            log.warning("job %s: place in line unknown (%s)", self.job.id, exc.message)
            return None

    def on_success(self, write: Callable[[Connection], None]) -> None:
        """Records the job makes: written in the transaction that stores its success, or not at all."""
        self._writes.append(write)

    def _fire(self) -> None:
        for callback in list(self._callbacks):
            callback()


class JobManager:
    def __init__(self, database: Database, *, lease_s: float = 15.0, max_running: int = 8,
                 max_watchers: int = 10_000, owner: str = ""):
        self.db, self.lease_s, self.max_running = database, lease_s, max_running
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.records: Records[common_pb2.Job] = Records(database, schema.jobs, "job", common_pb2.Job)
        self.handlers: dict[int, Handler] = {}
        self.watches = Watches(database, max_watchers)
        self._running: dict[str, JobContext] = {}
        self._lock = threading.Lock()
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._threads: list[threading.Thread] = []
        self._uncount: Callable[[], None] | None = None

    def register(self, kind: int, request_type: type[Message], run: Work) -> None:
        self.handlers[kind] = Handler(request_type, run)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.watches.start()
        self._uncount = metrics.count_jobs_with(self._counts)
        for target, name in ((self._dispatch, "jobs-dispatch"), (self._heartbeat, "jobs-heartbeat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop claiming and hand this gateway's running jobs back at once (their leases end now), so
        another gateway or the next start resumes them without waiting out a lease."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            running = list(self._running.values())
        for ctx in running:
            ctx._lost.set()
            ctx._fire()
        for thread in self._threads:
            thread.join(timeout=5)
        self.watches.stop()
        if self._uncount:
            self._uncount()
            self._uncount = None
        try:
            with self.db.write() as tx:
                tx.execute(schema.jobs.update().where(schema.jobs.c.owner == self.owner)
                           .where(schema.jobs.c.state == common_pb2.JOB_STATE_RUNNING).values(lease_until=0.0))
        except Unavailable as exc:
            log.warning("jobs not handed back (%s); their leases will run out", exc.message)

    # -- creating and querying -------------------------------------------------------------

    def submit(self, kind: int, request: Message, *, project_id: str = "", request_id: str = "",
               tx: Connection | None = None) -> common_pb2.Job:
        """Queue a job (within tx, when given); a request_id already used for this kind returns that job
        instead, even when two gateways race with it. Inside a trace, the job's run continues it."""
        traceparent = tracing.traceparent()
        job = common_pb2.Job(id=new_id("job"), kind=kind, state=common_pb2.JOB_STATE_QUEUED, project_id=project_id,
                             request_id=request_id, create_time=now(), trace_id=tracing.trace_id_of(traceparent))
        first = self._event(job)
        try:
            with contextlib.nullcontext(tx) if tx is not None else self.db.write() as tx:
                tx.execute(schema.jobs.insert().values(
                    id=job.id, kind=kind, state=job.state, project_id=project_id or None,
                    request_id=request_id or None, request=request.SerializeToString(),
                    body=job.SerializeToString(), last_sequence=job.last_sequence, traceparent=traceparent))
                tx.execute(schema.job_events.insert().values(job_id=job.id, sequence=first.sequence,
                                                             body=first.SerializeToString()))
        except sa.exc.IntegrityError:
            existing = self.for_request(kind, request_id)
            if existing is None:
                raise
            return existing
        self._wake.set()  # within a caller's tx this may be before its commit: the caller calls wake() after it
        return job

    def wake(self) -> None:
        """Look for queued jobs now (a job was just committed): a job submitted here is claimed here at once."""
        self._wake.set()

    def for_request(self, kind: int, request_id: str) -> common_pb2.Job | None:
        """The job an earlier create with this request_id started, so a retry does not start another."""
        validate_request_id(request_id)
        if not request_id:
            return None
        return self.records.find(kind=kind, request_id=request_id)

    def get(self, job_id: str) -> common_pb2.Job:
        return self.records.get(job_id, "job_id")

    def list(self, page_size: int, page_token: str, project_id: str = "", state: int = 0, newest_first: bool = True):
        if project_id:  # a filter, but still an id: refuse what is not one, like every other project_id
            validate_id(project_id, "project_id", "prj")
        return self.records.list(page_size, page_token, newest_first, project_id=project_id or None,
                                 state=state or None)

    def active(self, project_id: str) -> list[str]:
        """Ids of the project's queued and running jobs."""
        with self.db.read() as tx:
            return list(tx.execute(sa.select(schema.jobs.c.id).where(schema.jobs.c.project_id == project_id)
                                   .where(schema.jobs.c.state.not_in(TERMINAL)).limit(10)).scalars())

    def cancel(self, job_id: str) -> common_pb2.Job:
        """A queued job ends at once; a running one is told to stop, by whichever gateway runs it."""
        validate_id(job_id, "job_id", "job")
        with self.db.write() as tx:
            job = self.records._get(tx, job_id, "job_id", lock=True)
            if job.state in TERMINAL:
                raise FailedPrecondition(
                    f"job {job_id} already ended as {common_pb2.JobState.Name(job.state)}", field="job_id")
            if job.state == common_pb2.JOB_STATE_QUEUED:
                job.error, job.error_code = "cancelled before it started", _code(grpc.StatusCode.CANCELLED)
                job.end_time.CopyFrom(now())
                job.state = common_pb2.JOB_STATE_CANCELLED
                self._write_event(tx, job, self._event(job))
            else:
                tx.execute(schema.jobs.update().where(schema.jobs.c.id == job_id).values(cancel_requested=True))
        if job.state == common_pb2.JOB_STATE_CANCELLED:  # it never ran: no duration
            metrics.job_finished(common_pb2.JobKind.Name(job.kind), "JOB_STATE_CANCELLED", None)
        with self._lock:
            ctx = self._running.get(job_id)
        if ctx is not None:  # running here: stop it now rather than at the next heartbeat
            ctx._cancel.set()
            ctx._fire()
        self._notify()
        return job

    def open_watch(self, job_id: str, after_sequence: int, send: Send) -> Watch:
        """Feed send() the job's events after after_sequence, in order, then send(None) after the terminal
        one; from whichever gateway stored them. Holds no thread."""
        self.records.get(job_id, "job_id")
        return self.watches.open(job_id, after_sequence, send)

    def watch(self, job_id: str, after_sequence: int = 0) -> Iterator[common_pb2.JobEvent]:
        """The same, as an iterator: for in-process readers (tests, tools)."""
        events: queue.Queue = queue.Queue()
        watch = self.open_watch(job_id, after_sequence, lambda event, error=None: events.put((event, error)))
        try:
            while True:
                event, error = events.get()
                if event is None:
                    if error is not None:
                        raise error
                    return
                yield event
        finally:
            watch.close()

    # -- running ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(CLAIM_POLL_S)
            self._wake.clear()
            while not self._stopping.is_set() and len(self._running) < self.max_running:
                try:
                    claimed = self._claim()
                except Unavailable as exc:
                    log.warning("cannot claim jobs (%s)", exc.message)
                    break
                except Exception:  # a bug must not stop the dispatcher
                    log.exception("claiming a job failed")
                    break
                if claimed is None:
                    break
                ctx, handler, request = claimed
                threading.Thread(target=self._run, args=(ctx, handler, request), name=f"job-{ctx.job.id}",
                                 daemon=True).start()

    def _claim(self) -> tuple[JobContext, Handler, Message] | None:
        """Take the oldest queued job, or a running one whose gateway stopped renewing its lease."""
        jobs = schema.jobs.c
        claim_start = time.perf_counter()
        with self.db.write() as tx:
            row = tx.execute(
                sa.select(jobs.id, jobs.state, jobs.request, jobs.body, jobs.attempt, jobs.cancel_requested,
                          jobs.traceparent)
                .where(jobs.state.in_([common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_RUNNING]))
                .where(sa.or_(jobs.state == common_pb2.JOB_STATE_QUEUED, jobs.lease_until < time.time()))
                .order_by(jobs.id).limit(1).with_for_update(skip_locked=True)).first()
            if row is None:
                return None
            job = common_pb2.Job.FromString(row.body)
            tx.execute(schema.jobs.update().where(jobs.id == row.id).values(
                owner=self.owner, lease_until=time.time() + self.lease_s, attempt=row.attempt + 1))
            if row.state == common_pb2.JOB_STATE_QUEUED:
                job.state = common_pb2.JOB_STATE_RUNNING
                job.start_time.CopyFrom(now())
            else:
                job.progress.message = f"resumed (attempt {row.attempt + 1}): the gateway running it stopped"
            self._write_event(tx, job, self._event(job))
        ctx = JobContext(self, job, row.traceparent)
        ctx.timings["claim"] = time.perf_counter() - claim_start
        if row.state == common_pb2.JOB_STATE_QUEUED:  # from its submit to this claim
            ctx.timings["queued"] = max(0.0, (job.start_time.ToNanoseconds() - job.create_time.ToNanoseconds()) / 1e9)
            metrics.job_claimed(common_pb2.JobKind.Name(job.kind), ctx.timings["queued"])
        with self._lock:
            self._running[job.id] = ctx
        if row.cancel_requested:
            ctx._cancel.set()
        # a job a newer gateway accepted: fail it rather than leave it queued forever
        handler = self.handlers.get(job.kind) or Handler(common_pb2.Job, _unknown_kind)
        log.info("job %s claimed by %s (attempt %d)", job.id, self.owner, row.attempt + 1)
        return ctx, handler, handler.request_type.FromString(row.request)

    def _run(self, ctx: JobContext, handler: Handler, request: Message) -> None:
        kind = common_pb2.JobKind.Name(ctx.job.kind)
        # its log lines name the job; its worker calls and S3 requests join the trace of the request that queued it
        with job_scope(ctx.job.id), tracing.resumed(ctx.traceparent, f"job {kind}", **{"workbench.job_id": ctx.job.id}):
            self._attempt(ctx, handler, request)

    def _attempt(self, ctx: JobContext, handler: Handler, request: Message) -> None:
        job = ctx.job
        try:
            ctx.check_cancelled()
            with ctx.timed("run"):
                output = handler.run(ctx, request)
            ctx.check_cancelled()
            if output is not None:
                job.output.CopyFrom(output)
            job.progress.fraction = 1.0
            self._finish(ctx, common_pb2.JOB_STATE_SUCCEEDED)
        except Exception as exc:
            if isinstance(exc, LeaseLost) or ctx._lost.is_set():  # handed over: its new holder ends it
                log.info("job %s: handed over to another gateway", job.id)
            elif isinstance(exc, Cancelled):
                job.error, job.error_code = exc.message, _code(grpc.StatusCode.CANCELLED)
                self._finish(ctx, common_pb2.JOB_STATE_CANCELLED)
            elif isinstance(exc, JobFailed):
                job.error, job.failed_service, job.error_code = exc.message, exc.service, _code(exc.code)
                self._finish(ctx, common_pb2.JOB_STATE_FAILED)
            elif isinstance(exc, WorkbenchError):
                job.error, job.error_code = exc.message, _code(status_code_for(exc))
                self._finish(ctx, common_pb2.JOB_STATE_FAILED)
            else:  # a bug: keep the trace in the log, not in the job
                log.exception("job %s crashed", job.id)
                job.error, job.failed_service = "internal error in the gateway; see its log", "gateway"
                job.error_code = _code(grpc.StatusCode.INTERNAL)
                self._finish(ctx, common_pb2.JOB_STATE_FAILED)
        finally:
            with self._lock:
                self._running.pop(job.id, None)
            self._wake.set()

    def _finish(self, ctx: JobContext, state: int) -> None:
        """Store the job's end (with the records a success makes) in one transaction; through a storage
        outage, keep trying until it is stored or another gateway holds the job."""
        job = ctx.job
        job.state = state
        job.end_time.CopyFrom(now())
        writes = ctx._writes if state == common_pb2.JOB_STATE_SUCCEEDED else []
        _add_timings(job, ctx.timings)
        wait, longest = FINAL_SAVE_BACKOFF_S
        while True:
            saved = common_pb2.Job()
            saved.CopyFrom(job)
            try:
                with self.db.write() as tx:
                    self._check_owner(tx, saved.id)
                    for write in writes:
                        write(tx)
                    self._write_event(tx, saved, self._event(saved))
                break
            except LeaseLost:
                log.warning("job %s: another gateway took it over before its end was stored", job.id)
                return
            except Unavailable as exc:
                log.warning("job %s: end not stored (%s); retrying in %.1fs", job.id, exc.message, wait)
                time.sleep(wait)
                wait = min(wait * 2, longest)
        seconds = (job.end_time.ToNanoseconds() - job.start_time.ToNanoseconds()) / 1e9
        state_name = common_pb2.JobState.Name(state)
        metrics.job_finished(common_pb2.JobKind.Name(job.kind), state_name, seconds)
        log.info("job %s ended as %s after %.2fs", job.id, state_name, seconds)
        self._notify()

    def _heartbeat(self) -> None:
        """Renew this gateway's leases; stop jobs another gateway took over; pass on cancel requests."""
        interval = min(1.0, self.lease_s / 3)
        jobs = schema.jobs.c
        while not self._stopping.wait(interval):
            with self._lock:
                running = dict(self._running)
            if not running:
                continue
            try:
                with self.db.write() as tx:
                    tx.execute(schema.jobs.update().where(jobs.owner == self.owner).where(jobs.id.in_(running))
                               .values(lease_until=time.time() + self.lease_s))
                    held = dict(tx.execute(sa.select(jobs.id, jobs.cancel_requested).where(jobs.id.in_(running))
                                           .where(jobs.owner == self.owner)).all())
            except Unavailable as exc:
                log.warning("leases not renewed (%s)", exc.message)
                continue
            for job_id, ctx in running.items():
                if job_id not in held:
                    ctx._lost.set()
                    ctx._fire()
                elif held[job_id] and not ctx.cancelled:
                    ctx._cancel.set()
                    ctx._fire()

    # -- rows ------------------------------------------------------------------------------

    @staticmethod
    def _event(job: common_pb2.Job) -> common_pb2.JobEvent:
        """The job's next event (its sequence taken), carrying the whole job when it is the last."""
        job.last_sequence += 1
        event = common_pb2.JobEvent(job_id=job.id, sequence=job.last_sequence, time=now(), state=job.state)
        event.progress.CopyFrom(job.progress)
        if job.state in TERMINAL:
            event.job.CopyFrom(job)
        return event

    def _append(self, ctx: JobContext, event: common_pb2.JobEvent) -> None:
        with self.db.write() as tx:
            self._check_owner(tx, ctx.job.id)
            self._write_event(tx, ctx.job, event)
        self._notify()

    def _check_owner(self, tx: Connection, job_id: str) -> None:
        held = tx.execute(schema.jobs.update().where(schema.jobs.c.id == job_id)
                          .where(schema.jobs.c.owner == self.owner)
                          .values(lease_until=time.time() + self.lease_s))
        if not held.rowcount:
            with self._lock:
                ctx = self._running.get(job_id)
            if ctx is not None:
                ctx._lost.set()
            raise LeaseLost(job_id)

    @staticmethod
    def _write_event(tx: Connection, job: common_pb2.Job, event: common_pb2.JobEvent) -> None:
        """Store the event and the job as it stands after it."""
        tx.execute(schema.job_events.insert().values(job_id=job.id, sequence=event.sequence,
                                                     body=event.SerializeToString()))
        ended = {"waiting_for": None} if job.state in TERMINAL else {}
        tx.execute(schema.jobs.update().where(schema.jobs.c.id == job.id).values(
            state=job.state, body=job.SerializeToString(), last_sequence=job.last_sequence, **ended))

    def _counts(self) -> tuple[int, int]:
        """(queued, running) jobs in the catalog, for the queue-depth metrics."""
        jobs = schema.jobs.c
        with self.db.read() as tx:
            counts = dict(tx.execute(sa.select(jobs.state, sa.func.count())
                                     .where(jobs.state.in_([common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_RUNNING]))
                                     .group_by(jobs.state)).all())
        return counts.get(common_pb2.JOB_STATE_QUEUED, 0), counts.get(common_pb2.JOB_STATE_RUNNING, 0)

    def _wait_for(self, job_id: str, service: str | None) -> int:
        jobs = schema.jobs.c
        with self.db.write() as tx:
            tx.execute(schema.jobs.update().where(jobs.id == job_id).values(waiting_for=service))
            if service is None:
                return 0
            return tx.execute(sa.select(sa.func.count()).select_from(schema.jobs).where(jobs.waiting_for == service)
                              .where(jobs.state == common_pb2.JOB_STATE_RUNNING).where(jobs.id < job_id)).scalar()

    def _step(self, job_id: str, name: str) -> bytes | None:
        steps = schema.job_steps.c
        with self.db.read() as tx:
            return tx.execute(sa.select(steps.body).where(steps.job_id == job_id).where(steps.name == name)).scalar()

    def _save_step(self, ctx: JobContext, name: str, result: Message) -> None:
        with self.db.write() as tx:
            self._check_owner(tx, ctx.job.id)
            tx.execute(schema.job_steps.insert().values(job_id=ctx.job.id, name=name, body=result.SerializeToString()))

    def _notify(self) -> None:
        self.watches.notify()


def _add_timings(job: common_pb2.Job, timings: dict[str, float]) -> None:
    """Where this attempt's time went, into the progress metrics its terminal event carries: queued (submit to
    claim), claim (the claiming transaction), run (the handler), worker (its worker calls, of which
    worker_first_response is dialling and waiting for the first answer), records (its stored progress, steps and
    places in line) and gateway (run less worker and records: the handler's own code and S3 calls)."""
    stages = dict(timings)
    if "run" in stages:
        stages["gateway"] = max(0.0, stages["run"] - stages.get("worker", 0.0) - stages.get("records", 0.0))
    job.progress.metrics.update({f"job_{name}_s": round(seconds, 4) for name, seconds in stages.items()})


def _unknown_kind(ctx: JobContext, _request: Message) -> None:
    raise Unimplemented(f"this gateway does not know jobs of kind {ctx.job.kind}; upgrade it")


def _code(status: grpc.StatusCode) -> int:
    """The google.rpc.Code number of a gRPC status."""
    return status.value[0]
