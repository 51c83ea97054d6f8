"""The job manager on a real catalog database (both engines): several managers stand for several gateways
sharing one database, as replicas do."""

from __future__ import annotations

import threading
import time

import pytest

from workbench_runtime.errors import ResourceExhausted
from services.gateway.jobs import TERMINAL, JobContext, JobManager
from services.gateway.watches import RETRY_S
from services.gateway.projects import Catalog
from services.gateway.records import derived_id
from workbench.v1 import common_pb2, gateway_pb2

KIND = common_pb2.JOB_KIND_BENCHMARK
REQUEST = gateway_pb2.BenchmarkProjectRequest


@pytest.fixture
def managers(database):
    """make(work, **options) -> a started JobManager running `work` for KIND; all stopped afterwards."""
    made: list[JobManager] = []

    def make(work, start: bool = True, **options) -> JobManager:
        manager = JobManager(database, **{"lease_s": 2.0, **options})
        manager.register(KIND, REQUEST, work)
        if start:
            manager.start()
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.stop()


def wait_end(manager: JobManager, job_id: str, timeout: float = 20) -> common_pb2.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = manager.get(job_id)
        if job.state in TERMINAL:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {common_pb2.JobState.Name(manager.get(job_id).state)}")


def test_a_job_runs_to_its_end_with_every_event_stored_in_order(managers):
    def work(ctx: JobContext, request):
        for i in range(5):
            ctx.progress("counting", (i + 1) / 5)
        return common_pb2.JobOutput(project_id=request.project_id)

    manager = managers(work)
    job = manager.submit(KIND, REQUEST(project_id="prj-0000000000000000001"), project_id="prj-0000000000000000001")
    events = list(manager.watch(job.id))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.state for e in events][:2] == [common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_RUNNING]
    assert events[-1].job.output.project_id == "prj-0000000000000000001"
    assert manager.get(job.id).last_sequence == events[-1].sequence
    # a late watcher replays from the database, from any point
    assert list(manager.watch(job.id, 3)) == events[3:]


def test_watchers_past_the_limit_get_resource_exhausted_with_a_retry_hint(managers):
    release = threading.Event()
    manager = managers(lambda ctx, request: release.wait(10) and None, max_watchers=1)
    job = manager.submit(KIND, REQUEST())
    first = manager.watch(job.id)
    assert next(first).sequence == 1
    with pytest.raises(ResourceExhausted) as err:
        next(manager.watch(job.id))
    assert err.value.retry_after_s == RETRY_S
    first.close()  # a watcher that leaves frees its place
    second = manager.watch(job.id)
    release.set()
    assert list(second)[-1].state == common_pb2.JOB_STATE_SUCCEEDED


def test_a_job_whose_gateway_died_is_resumed_by_another_from_its_last_finished_step(managers, database):
    """Gateway A claims the job, finishes its first step and dies (no more heartbeats); B takes over when
    the lease runs out, skips the finished step, and makes the job's one record; A, come back, writes nothing."""
    runs = {"measure": 0, "record": 0}
    a_in_second_step = threading.Event()
    catalog = Catalog(database, None)

    def work(ctx: JobContext, request):
        def measure():
            runs["measure"] += 1
            return common_pb2.BenchmarkConfig(duration_seconds=7)

        measured = ctx.step("measure", common_pb2.BenchmarkConfig, measure)
        runs["record"] += 1
        if runs["record"] == 1:  # A: dies here
            a_in_second_step.set()
            raise SystemExit  # never reached by B
        project = gateway_pb2.Project(id=derived_id("prj", ctx.job.id), name=f"took {measured.duration_seconds:g}")
        ctx.on_success(lambda tx: catalog.projects.insert(project, tx))
        return common_pb2.JobOutput(project_id=project.id)

    a = managers(work, start=False)
    job = a.submit(KIND, REQUEST())
    ctx, handler, request = a._claim()
    threading.Thread(target=lambda: _swallow(handler.run, ctx, request), daemon=True).start()
    assert a_in_second_step.wait(10)
    b = managers(work)
    ended = wait_end(b, job.id)
    assert ended.state == common_pb2.JOB_STATE_SUCCEEDED, ended.error
    assert runs == {"measure": 1, "record": 2}
    assert catalog.projects.get(ended.output.project_id, "id").name == "took 7"
    events = list(b.watch(job.id))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert any("resumed (attempt 2)" in e.progress.message for e in events)
    # A's late end is refused: the job and its records stay as B left them
    a._finish(ctx, common_pb2.JOB_STATE_FAILED)
    assert b.get(job.id).state == common_pb2.JOB_STATE_SUCCEEDED
    assert b.get(job.id).last_sequence == events[-1].sequence


def _swallow(run, *args):
    try:
        run(*args)
    except SystemExit:
        pass


def test_a_stopping_gateway_hands_its_jobs_back_at_once(managers):
    started = threading.Event()
    attempts = []

    def work(ctx: JobContext, request):
        attempts.append(ctx.job.id)
        if len(attempts) == 1:
            started.set()
            while not ctx.cancelled:
                ctx.check_cancelled()  # LeaseLost once the gateway stops
                time.sleep(0.02)
        return common_pb2.JobOutput()

    a = managers(work, lease_s=60.0)
    job = a.submit(KIND, REQUEST())
    assert started.wait(10)
    a.stop()
    b = managers(work, lease_s=60.0)  # a lease of a minute, yet B need not wait for it
    assert wait_end(b, job.id, timeout=10).state == common_pb2.JOB_STATE_SUCCEEDED
    assert len(attempts) == 2


def test_cancel_through_another_gateway_stops_the_running_job(managers):
    started = threading.Event()

    def work(ctx: JobContext, request):
        started.set()
        while True:
            ctx.check_cancelled()
            time.sleep(0.02)

    managers(work)  # A: the only one that runs jobs
    b = managers(work, max_running=0)
    job = b.submit(KIND, REQUEST())
    assert started.wait(10)
    assert b.cancel(job.id).state == common_pb2.JOB_STATE_RUNNING
    ended = wait_end(b, job.id, timeout=10)
    assert ended.state == common_pb2.JOB_STATE_CANCELLED and ended.error == "cancelled by request"


def test_a_queued_job_cancelled_never_runs(managers):
    ran = []
    idle = managers(lambda ctx, request: ran.append(1), max_running=0)
    job = idle.submit(KIND, REQUEST())
    cancelled = idle.cancel(job.id)
    assert cancelled.state == common_pb2.JOB_STATE_CANCELLED
    managers(lambda ctx, request: ran.append(1))
    time.sleep(1.0)
    assert idle.get(job.id).state == common_pb2.JOB_STATE_CANCELLED and not ran


def test_a_request_id_raced_on_two_gateways_makes_one_job(managers):
    a, b = (managers(lambda ctx, request: None, max_running=0) for _ in range(2))
    barrier = threading.Barrier(8)
    made: list[str] = []

    def submit(manager: JobManager) -> None:
        barrier.wait()
        made.append(manager.submit(KIND, REQUEST(), request_id="same-request").id)

    threads = [threading.Thread(target=submit, args=(m,)) for m in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 1
    jobs, _ = a.list(100, "")
    assert [j.id for j in jobs] == made[:1]


def test_jobs_are_shared_out_among_gateways_with_free_slots(managers):
    """Four jobs, two gateways with one slot each: both work at once, and the queue drains."""
    running: dict[str, str] = {}
    both = threading.Event()
    lock = threading.Lock()

    def work(ctx: JobContext, request):
        with lock:
            running[ctx.job.id] = ctx._manager.owner
            if len(set(running.values())) == 2:
                both.set()
        both.wait(10)
        return common_pb2.JobOutput()

    a, b = managers(work, max_running=1), managers(work, max_running=1)
    jobs = [a.submit(KIND, REQUEST()) for _ in range(4)]
    assert both.wait(10), running
    assert all(wait_end(a, job.id).state == common_pb2.JOB_STATE_SUCCEEDED for job in jobs)
    assert set(running.values()) == {a.owner, b.owner}
