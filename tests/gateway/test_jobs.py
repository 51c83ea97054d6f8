"""The job manager on real storage: watchers are admitted up to a limit, then turned away with a hint."""

from __future__ import annotations

import threading

import pytest

from services.common.errors import ResourceExhausted
from services.gateway.jobs import WATCH_RETRY_S, JobManager
from services.gateway.records import RequestIndex
from workbench.v1 import common_pb2


def test_watchers_past_the_limit_get_resource_exhausted_with_a_retry_hint(store, bucket):
    jobs = JobManager(store, bucket, RequestIndex(store, bucket), max_watchers=1)
    release = threading.Event()
    job = jobs.submit(common_pb2.JOB_KIND_BENCHMARK, lambda ctx: release.wait(10) and None)
    first = jobs.watch(job.id, 0, lambda: True)
    assert next(first).sequence == 1
    with pytest.raises(ResourceExhausted) as err:
        next(jobs.watch(job.id, 0, lambda: True))
    assert err.value.retry_after_s == WATCH_RETRY_S
    first.close()  # a watcher that leaves frees its place
    second = jobs.watch(job.id, 0, lambda: True)
    release.set()
    assert list(second)[-1].state == common_pb2.JOB_STATE_SUCCEEDED
