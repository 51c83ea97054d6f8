"""Job watchers without a thread each: one feeder thread serves every open WatchJob of a gateway.

A watch is a job id, the last sequence it was sent, and a `send` callback (grpc's non-blocking
stream sender, or a queue for in-process readers). The feeder asks the database which watched jobs
have new events, one query for all of them, whenever this gateway stores an event and every
POLL_S otherwise (events another gateway stored), then sends each watch what it has not seen.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

import sqlalchemy as sa

from workbench_runtime.errors import ResourceExhausted, Unavailable, WorkbenchError
from services.gateway import db as schema
from services.gateway.db import Database
from workbench.v1 import common_pb2

log = logging.getLogger(__name__)

TERMINAL = {common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED}
POLL_S = 0.2
RETRY_S = 1.0  # what a watcher turned away is told to wait
QUERY_CHUNK = 500  # ids per IN (...) list

# send(event) delivers one event; send(None, error) ends the watch, with an error or (None) normally
Send = Callable[..., None]


@dataclass(eq=False)
class Watch:
    job_id: str
    sent: int
    send: Send
    forget: Callable[["Watch"], None]
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        """The watcher left (or was sent its end): its place is free at once."""
        self.closed.set()
        self.forget(self)


class Watches:
    def __init__(self, database: Database, limit: int):
        self.db, self.limit = database, limit
        self._watches: set[Watch] = set()
        self._lock = threading.Lock()
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._feed, name="job-watches", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End every open watch with UNAVAILABLE: clients watch again, through another gateway."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            watches, self._watches = list(self._watches), set()
        for watch in watches:
            watch.send(None, Unavailable("the gateway is shutting down; watch the job again"))

    def open(self, job_id: str, after_sequence: int, send: Send) -> Watch:
        watch = Watch(job_id, after_sequence, send, self._forget)
        with self._lock:
            if len(self._watches) >= self.limit:
                raise ResourceExhausted("too many job watches open at once; retry shortly or poll GetJob",
                                        retry_after_s=RETRY_S)
            self._watches.add(watch)
        self._wake.set()
        return watch

    def _forget(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def notify(self) -> None:
        """New events were stored here: feed watchers now rather than at the next poll."""
        self._wake.set()

    def _feed(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(POLL_S)
            self._wake.clear()
            with self._lock:
                watches = list(self._watches)
            if not watches:
                continue
            try:
                self._feed_once(watches)
            except Unavailable as exc:  # watchers wait for the database like everyone else
                log.warning("job watchers not fed (%s)", exc.message)
            except Exception:  # a bug must not stop every watcher
                log.exception("feeding job watchers failed")

    def _feed_once(self, watches: list[Watch]) -> None:
        by_job: dict[str, list[Watch]] = {}
        for watch in watches:
            by_job.setdefault(watch.job_id, []).append(watch)
        jobs = schema.jobs.c
        latest: dict[str, int] = {}
        ids = list(by_job)
        with self.db.read() as tx:
            for lo in range(0, len(ids), QUERY_CHUNK):
                latest.update(tx.execute(sa.select(jobs.id, jobs.last_sequence)
                                         .where(jobs.id.in_(ids[lo:lo + QUERY_CHUNK]))).all())
        for job_id, waiting in by_job.items():
            if job_id not in latest:  # deleted, or never there: the watch was checked when it opened
                for watch in waiting:
                    self._end(watch, Unavailable(f"job {job_id} is gone"))
                continue
            behind = [w for w in waiting if w.sent < latest[job_id]]
            if behind:
                self._send_new(job_id, behind)

    def _send_new(self, job_id: str, watches: list[Watch]) -> None:
        events = schema.job_events.c
        with self.db.read() as tx:
            bodies = tx.execute(sa.select(events.body).where(events.job_id == job_id)
                                .where(events.sequence > min(w.sent for w in watches))
                                .order_by(events.sequence)).scalars().all()
        for body in bodies:
            event = common_pb2.JobEvent.FromString(body)
            for watch in watches:
                if event.sequence > watch.sent and not watch.closed.is_set():
                    watch.send(event)
                    watch.sent = event.sequence
                    if event.state in TERMINAL:
                        self._end(watch, None)

    def _end(self, watch: Watch, error: WorkbenchError | None) -> None:
        watch.close()
        watch.send(None, error)
