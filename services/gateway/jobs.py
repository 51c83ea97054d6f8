"""Jobs: long work run in the background, observable event by event, cancellable, durable.

A job's record and its event log live in object storage. Watchers of a running job are fed
from memory; a finished job's events are replayed from storage, so they survive a restart.
A job found still running when the gateway starts was interrupted: it is marked failed.
While storage is unreachable a running job goes on from memory; its end is saved once storage
is back, and until then the job stays answerable from memory.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from google.protobuf import json_format, timestamp_pb2

from services.common import pb
from services.common.errors import Cancelled, FailedPrecondition, ResourceExhausted, WorkbenchError
from services.common.object_store import ObjectStore
from services.gateway.records import Records, RequestIndex, validate_request_id
from workbench.v1 import common_pb2

log = logging.getLogger(__name__)

TERMINAL = {common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED}
PERSIST_INTERVAL_S = 1.0  # progress is saved at most this often; state changes are saved at once
FINAL_SAVE_BACKOFF_S = (0.5, 10.0)  # first and longest wait between tries to save a finished job
WATCH_RETRY_S = 1.0  # what a watcher turned away is told to wait


def now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class JobFailed(WorkbenchError):
    """Ends a job as FAILED, naming the service at fault."""

    def __init__(self, message: str, service: str = ""):
        super().__init__(message)
        self.service = service


@dataclass
class _Running:
    job: common_pb2.Job
    events: list[common_pb2.JobEvent] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    on_cancel: list[Callable[[], None]] = field(default_factory=list)
    last_persist: float = 0.0
    end_saved: bool = False


class JobContext:
    """What a job's work function sees: progress reporting and cancellation."""

    def __init__(self, manager: "JobManager", running: _Running):
        self._manager, self._running = manager, running

    @property
    def job(self) -> common_pb2.Job:
        return self._running.job

    @property
    def cancelled(self) -> bool:
        return self._running.cancel_requested.is_set()

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled("cancelled by request")

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Register a callback that stops in-flight work (e.g. cancels a worker RPC) on CancelJob."""
        self._running.on_cancel.append(callback)
        if self.cancelled:
            callback()

    def progress(self, stage: str, fraction: float | None = None, message: str = "", **metrics: float) -> None:
        self.report(pb.progress(stage, fraction, message, **metrics))

    def report(self, progress: common_pb2.Progress) -> None:
        self._manager._event(self._running, progress=progress)
        self._manager._save_progress(self._running)


Work = Callable[[JobContext], common_pb2.JobOutput | None]


class JobManager:
    def __init__(self, store: ObjectStore, bucket: str, requests: RequestIndex, max_watchers: int = 8):
        self.records: Records[common_pb2.Job] = Records(store, bucket, "jobs", "job", common_pb2.Job)
        # each watch holds a server thread for as long as it lasts: past this many, watchers are turned
        # away with a retry hint, so short calls always find a thread
        self._watch_slots = threading.BoundedSemaphore(max_watchers)
        self._requests = requests
        self._store, self._bucket = store, bucket
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def recover(self) -> int:
        """Mark jobs left unfinished by a previous gateway process as failed; returns how many."""
        count = 0
        for job in self.records.scan():
            if job.state not in TERMINAL and job.id not in self._running:
                running = _Running(job=job, events=self._load_events(job.id))
                job.error = "interrupted: the gateway stopped while the job was running; retry it"
                job.failed_service = "gateway"
                self._finish(running, common_pb2.JOB_STATE_FAILED)
                if not running.end_saved:
                    self._persist(running)
                count += 1
        return count

    def submit(self, kind: int, work: Work, *, project_id: str = "", request_id: str = "") -> common_pb2.Job:
        job = common_pb2.Job(
            id=self.records.new_id(), kind=kind, state=common_pb2.JOB_STATE_QUEUED,
            project_id=project_id, request_id=request_id, create_time=now(),
        )
        running = _Running(job=job)
        self._event(running, state=common_pb2.JOB_STATE_QUEUED)
        self._persist(running)  # storage down: the client hears UNAVAILABLE and nothing starts
        with self._lock:
            self._running[job.id] = running
        threading.Thread(target=self._run, args=(running, work), name=f"job-{job.id}", daemon=True).start()
        self._requests.remember(f"job-{kind}", request_id, job.id)
        return self._snapshot(running)

    def for_request(self, kind: int, request_id: str) -> common_pb2.Job | None:
        """The job an earlier create with this request_id started, so a retry does not start another."""
        validate_request_id(request_id)
        job_id = self._requests.lookup(f"job-{kind}", request_id)
        return self.get(job_id) if job_id else None

    def _run(self, running: _Running, work: Work) -> None:
        job = running.job
        try:
            if running.cancel_requested.is_set():
                raise Cancelled("cancelled before it started")
            job.start_time.CopyFrom(now())
            self._event(running, state=common_pb2.JOB_STATE_RUNNING)
            self._save_progress(running, force=True)
            output = work(JobContext(self, running))
            if running.cancel_requested.is_set():
                raise Cancelled("cancelled by request")
            if output is not None:
                job.output.CopyFrom(output)
            job.progress.fraction = 1.0
            self._finish(running, common_pb2.JOB_STATE_SUCCEEDED)
        except Cancelled as exc:
            job.error = exc.message
            self._finish(running, common_pb2.JOB_STATE_CANCELLED)
        except JobFailed as exc:
            job.error, job.failed_service = exc.message, exc.service
            self._finish(running, common_pb2.JOB_STATE_FAILED)
        except WorkbenchError as exc:
            job.error = exc.message
            self._finish(running, common_pb2.JOB_STATE_FAILED)
        except Exception:  # a bug: keep the trace in the log, not in the job
            log.exception("job %s crashed", job.id)
            job.error = "internal error in the gateway; see its log"
            job.failed_service = "gateway"
            self._finish(running, common_pb2.JOB_STATE_FAILED)
        finally:
            self._save_final(running)
            with self._lock:
                self._running.pop(job.id, None)

    # -- queries ---------------------------------------------------------------------------

    def get(self, job_id: str) -> common_pb2.Job:
        with self._lock:
            running = self._running.get(job_id)
        if running is not None:
            return self._snapshot(running)
        return self.records.get(job_id, "job_id")

    def cancel(self, job_id: str) -> common_pb2.Job:
        with self._lock:
            running = self._running.get(job_id)
        if running is None:
            job = self.records.get(job_id, "job_id")  # NOT_FOUND for unknown ids
            raise FailedPrecondition(
                f"job {job_id} already ended as {common_pb2.JobState.Name(job.state)}", field="job_id"
            )
        running.cancel_requested.set()
        for callback in list(running.on_cancel):
            callback()
        return self._snapshot(running)

    def watch(self, job_id: str, after_sequence: int, is_active: Callable[[], bool]) -> Iterator[common_pb2.JobEvent]:
        """Events after after_sequence in order, ending with the terminal one."""
        if not self._watch_slots.acquire(blocking=False):
            raise ResourceExhausted("too many job watches open at once; retry shortly or poll GetJob",
                                    retry_after_s=WATCH_RETRY_S)
        try:
            yield from self._watch(job_id, after_sequence, is_active)
        finally:
            self._watch_slots.release()

    def _watch(self, job_id: str, after_sequence: int, is_active: Callable[[], bool]) -> Iterator[common_pb2.JobEvent]:
        with self._lock:
            running = self._running.get(job_id)
        if running is None:
            self.records.get(job_id, "job_id")
            yield from (e for e in self._load_events(job_id) if e.sequence > after_sequence)
            return
        sent = after_sequence
        while True:
            with running.changed:
                pending = [e for e in running.events if e.sequence > sent]
                if not pending:
                    if running.events and running.events[-1].state in TERMINAL:  # all sent, the end included
                        return
                    running.changed.wait(timeout=0.5)  # wake up now and then to notice a gone client
                    if not is_active():
                        return
                    continue
            for event in pending:
                yield event
                sent = event.sequence
            if pending[-1].state in TERMINAL:
                return

    # -- internals -------------------------------------------------------------------------

    def _snapshot(self, running: _Running) -> common_pb2.Job:
        with running.changed:
            job = common_pb2.Job()
            job.CopyFrom(running.job)
            return job

    def _event(self, running: _Running, *, state: int | None = None, progress=None) -> None:
        self._publish(running, self._next_event(running, state=state, progress=progress))

    def _next_event(self, running: _Running, *, state: int | None = None, progress=None) -> common_pb2.JobEvent:
        with running.changed:
            job = running.job
            if state is not None:
                job.state = state
            if progress is not None:
                job.progress.CopyFrom(progress)
            job.last_sequence += 1
            event = common_pb2.JobEvent(job_id=job.id, sequence=job.last_sequence, time=now(), state=job.state)
            event.progress.CopyFrom(job.progress)
            if job.state in TERMINAL:
                event.job.CopyFrom(job)
            return event

    @staticmethod
    def _publish(running: _Running, event: common_pb2.JobEvent) -> None:
        with running.changed:
            running.events.append(event)
            running.changed.notify_all()

    def _finish(self, running: _Running, state: int) -> None:
        running.job.end_time.CopyFrom(now())
        event = self._next_event(running, state=state)
        # stored before any watcher hears of it, so a client that saw the end finds it stored; with storage
        # down, watchers hear it from memory and _save_final keeps trying
        try:
            self._persist(running, also=event)
            running.end_saved = True
        except WorkbenchError as exc:
            log.warning("job %s: end not saved yet (%s)", running.job.id, exc.message)
        self._publish(running, event)

    def _save_progress(self, running: _Running, force: bool = False) -> None:
        """Best effort: a storage outage must not end a job the workers are still doing."""
        if not force and time.monotonic() - running.last_persist < PERSIST_INTERVAL_S:
            return
        running.last_persist = time.monotonic()
        try:
            self._persist(running)
        except WorkbenchError as exc:
            log.warning("job %s: progress not saved (%s); it stays in memory", running.job.id, exc.message)

    def _save_final(self, running: _Running) -> None:
        """A finished job is never lost: keep trying until storage takes it (the job answers from memory)."""
        wait, longest = FINAL_SAVE_BACKOFF_S
        while not running.end_saved:
            try:
                self._persist(running)
                running.end_saved = True
            except WorkbenchError as exc:
                log.warning("job %s: end not saved (%s); retrying in %.1fs", running.job.id, exc.message, wait)
                time.sleep(wait)
                wait = min(wait * 2, longest)

    def _persist(self, running: _Running, also: common_pb2.JobEvent | None = None) -> None:
        """Save the job's record and its events (with `also`, one not yet published)."""
        self.records.put(running.job)
        events = [json_format.MessageToDict(e, preserving_proto_field_name=True)
                  for e in [*running.events, *([also] if also else [])]]
        self._store.put_json(self._bucket, self._events_key(running.job.id), {"events": events})

    def _load_events(self, job_id: str) -> list[common_pb2.JobEvent]:
        key = self._events_key(job_id)
        if not self._store.exists(self._bucket, key):
            return []
        doc = self._store.get_json(self._bucket, key)
        return [json_format.ParseDict(e, common_pb2.JobEvent(), ignore_unknown_fields=True) for e in doc["events"]]

    @staticmethod
    def _events_key(job_id: str) -> str:
        return f"job-events/{job_id}.json"

