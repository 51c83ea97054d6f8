"""Run blocking domain work in a thread and stream its progress from a gRPC handler.

Domain functions take a `report(stage, fraction, message="", **metrics)` callback and know
nothing about gRPC. When the client goes away (the gateway cancelled the job), the next
report() raises Cancelled inside the work, so it stops at its next step.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from typing import Any, Callable, Generator, TypeVar

from workbench_runtime.errors import Cancelled
from services.common.pb import progress
from workbench.v1 import common_pb2

T = TypeVar("T")
Report = Callable[..., None]


class Reporter:
    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()

    def __call__(self, stage: str, fraction: float | None = None, message: str = "", **metrics: float) -> None:
        if self.cancelled.is_set():
            raise Cancelled("cancelled by the caller")
        self.events.put(("progress", progress(stage, fraction, message, **metrics)))


def run_reporting(work: Callable[[Report], T], wrap: Callable[[common_pb2.Progress], Any]) -> Generator[Any, None, T]:
    """Yield wrap(progress) for each report of work(report); return work's result or raise its error."""
    reporter = Reporter()

    def target() -> None:
        try:
            reporter.events.put(("done", work(reporter)))
        except BaseException as exc:  # handed to the handler thread, which re-raises it
            reporter.events.put(("error", exc))

    # in the handler's context: the work's S3 requests are spans of the RPC's trace
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target,), name="work", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = reporter.events.get()
            if kind == "progress":
                yield wrap(value)
            elif kind == "done":
                return value
            else:
                raise value
    finally:
        # Closed early (client gone) or failed: let the work stop at its next report, then wait for it.
        reporter.cancelled.set()
        thread.join()
