"""A worker's slots: how many long calls (the streaming job RPCs) it runs at once.

A call that finds every slot taken is refused at once with RESOURCE_EXHAUSTED and a retry hint,
before any work starts, instead of queueing inside this replica: the gateway then tries again, and
its round-robin channel takes the next attempt to another replica, so work goes to whichever
replica has a free slot and none waits behind a busy one while another is idle.
"""

from __future__ import annotations

import threading

import grpc

from workbench_runtime import errors
from services.common.interceptors import rebuild_handler, to_grpc_status
from services.common.telemetry import metrics

RETRY_S = 0.5
LIMITED_PREFIX = "/workbench.v1."  # health and reflection streams are never limited


class Slots(grpc.ServerInterceptor):
    def __init__(self, service_name: str, count: int):
        self.service_name, self.count = service_name, count
        self._free = threading.BoundedSemaphore(count)
        self._lock = threading.Lock()
        self.busy = self.peak = self.served = 0  # for tests and operators: what the replica has done
        metrics.slots(service_name, self.busy, count)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not handler.response_streaming \
                or not handler_call_details.method.startswith(LIMITED_PREFIX):
            return handler

        def wrap(behavior, _response_streaming):
            def limited(request, context):
                if not self._free.acquire(blocking=False):
                    context.abort_with_status(to_grpc_status(errors.ResourceExhausted(
                        f"all {self.count} {self.service_name} slots are busy; retry shortly", retry_after_s=RETRY_S)))
                self._taken(+1)
                try:
                    yield from behavior(request, context)
                finally:
                    self._taken(-1)
                    self._free.release()
            return limited

        return rebuild_handler(handler, wrap)

    def _taken(self, change: int) -> None:
        with self._lock:
            self.busy += change
            if change > 0:
                self.served += 1
                self.peak = max(self.peak, self.busy)
            metrics.slots(self.service_name, self.busy, self.count)
