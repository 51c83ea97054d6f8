"""The catalog under load: list, get and replay latencies at 1,000 and 100,000 records, creates per second.

    .venv/bin/python bench/catalog.py [--sizes 1000 100000] [--engines sqlite postgresql]

For each engine, two catalogs (1,000 and 100,000 projects and jobs, 10 events each) are written straight
into empty databases, two gateway processes serve them at once, and every call is measured over gRPC
alternating between the two, round after round: the first page of ListProjects, ListProjects by parent,
ListJobs by project and by state, GetProject, and the replay of a finished job's events (WatchJob),
p50 and p99 each. Then CreateProject per second from 16 clients with their own channels, a walk through
every project page by page, and, on the large catalog, 1,000 WatchJob streams on one queued job: the
gateway's memory with them, GetProject's latency while they are open, and the time until all have the
job's end once it is cancelled. `flat` is each call's p99 on the large catalog over the small one's (the
target: at most 1.5). The last line is the JSON, keyed by engine, then by size, then by call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import emit, peak_rss_mb, rss_mb, seaweed, service_process  # noqa: E402
from services.gateway import db as schema  # noqa: E402
from services.gateway.db import Database  # noqa: E402
from workbench.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc  # noqa: E402

EVENTS_PER_JOB = 10
CREATE_CLIENTS = 16
SEED_CHUNK = 5000


def ids(prefix: str, count: int, start_ms: int) -> list[str]:
    """Sortable ids as the gateway makes them, one millisecond apart."""
    return [f"{prefix}-{start_ms + i:011x}{random.getrandbits(32):08x}" for i in range(count)]


def seed(database: Database, count: int) -> dict:
    """count projects (every tenth a parent of the next nine) and count jobs with their events."""
    start_ms = int(time.time() * 1000) - 10 * count
    project_ids, job_ids = ids("prj", count, start_ms), ids("job", count, start_ms)
    states = [common_pb2.JOB_STATE_SUCCEEDED] * 8 + [common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED]
    with database.write() as tx:
        for lo in range(0, count, SEED_CHUNK):
            projects, jobs, events = [], [], []
            for i in range(lo, min(count, lo + SEED_CHUNK)):
                parent = project_ids[i - i % 10] if i % 10 else ""
                project = gateway_pb2.Project(id=project_ids[i], name=f"project {i}", device="CPU", parent_id=parent)
                projects.append({"id": project.id, "parent_id": parent or None, "model_id": None, "dataset_id": None,
                                 "request_id": None, "body": project.SerializeToString()})
                state = states[i % len(states)]
                job = common_pb2.Job(id=job_ids[i], kind=common_pb2.JOB_KIND_BENCHMARK, state=state,
                                     project_id=project_ids[i], last_sequence=EVENTS_PER_JOB)
                jobs.append({"id": job.id, "kind": job.kind, "state": state, "project_id": job.project_id,
                             "request_id": None, "request": b"", "owner": None, "lease_until": None, "attempt": 1,
                             "cancel_requested": False, "last_sequence": EVENTS_PER_JOB,
                             "body": job.SerializeToString()})
                for sequence in range(1, EVENTS_PER_JOB + 1):
                    event = common_pb2.JobEvent(job_id=job.id, sequence=sequence,
                                                state=state if sequence == EVENTS_PER_JOB else common_pb2.JOB_STATE_RUNNING)
                    event.progress.fraction = sequence / EVENTS_PER_JOB
                    if sequence == EVENTS_PER_JOB:
                        event.job.CopyFrom(job)
                    events.append({"job_id": job.id, "sequence": sequence, "body": event.SerializeToString()})
            tx.execute(schema.projects.insert(), projects)
            tx.execute(schema.jobs.insert(), jobs)
            tx.execute(schema.job_events.insert(), events)
        # one job that stays queued (the bench gateway runs no jobs): what the watchers watch
        waiting = common_pb2.Job(id=ids("job", 1, start_ms + count)[0], kind=common_pb2.JOB_KIND_BENCHMARK,
                                 state=common_pb2.JOB_STATE_QUEUED, last_sequence=1)
        first = common_pb2.JobEvent(job_id=waiting.id, sequence=1, state=waiting.state)
        tx.execute(schema.jobs.insert().values(id=waiting.id, kind=waiting.kind, state=waiting.state, request=b"",
                                               body=waiting.SerializeToString(), last_sequence=1))
        tx.execute(schema.job_events.insert().values(job_id=waiting.id, sequence=1, body=first.SerializeToString()))
    # settle what a bulk load leaves behind (statistics, the WAL, autovacuum's work) before measuring
    raw = database.engine.raw_connection()  # outside any transaction: VACUUM and checkpoints refuse one
    try:
        driver = raw.driver_connection
        if database.is_sqlite:
            for statement in ("ANALYZE", "PRAGMA wal_checkpoint(TRUNCATE)"):
                driver.execute(statement)
        else:
            driver.autocommit = True
            for statement in ("VACUUM (ANALYZE)", "CHECKPOINT"):
                driver.execute(statement)
    finally:
        raw.close()
    return {"parent": project_ids[(count // 2) - (count // 2) % 10], "project": project_ids[count // 2],
            "job": job_ids[count // 2], "queued_job": waiting.id, "projects": count}


def alternated(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict]:
    """Each side's call in turn, round after round (the machine is shared: both sides see the same noise);
    p50 and p99 of each side, in ms."""
    for call in calls.values():
        call()  # warm: the first call pays for the channel and the statement caches
    times: dict[str, list[float]] = {side: [] for side in calls}
    for _ in range(rounds):
        for side, call in calls.items():
            start = time.perf_counter()
            call()
            times[side].append((time.perf_counter() - start) * 1000)
    return {side: {"p50_ms": round(float(np.percentile(t, 50)), 2), "p99_ms": round(float(np.percentile(t, 99)), 2)}
            for side, t in times.items()}


def creates_per_second(address: str, seconds: float) -> float:
    made, stop = [0] * CREATE_CLIENTS, threading.Event()

    def client(slot: int) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            while not stop.is_set():
                stub.CreateProject(gateway_pb2.CreateProjectRequest(name="load", request_id=uuid.uuid4().hex))
                made[slot] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CREATE_CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(made) / (time.perf_counter() - start)


def calls(stub, seeded: dict) -> dict[str, Callable[[], object]]:
    """The measured calls against one seeded catalog."""
    def replay() -> None:
        events = list(stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=seeded["job"])))
        assert len(events) == EVENTS_PER_JOB

    return {
        "list_projects": lambda: stub.ListProjects(gateway_pb2.ListProjectsRequest(page_size=50)),
        "list_projects_by_parent": lambda: stub.ListProjects(
            gateway_pb2.ListProjectsRequest(parent_id=seeded["parent"], page_size=50)),
        "list_jobs_by_project": lambda: stub.ListJobs(
            gateway_pb2.ListJobsRequest(project_id=seeded["project"], page_size=50)),
        "list_jobs_by_state": lambda: stub.ListJobs(
            gateway_pb2.ListJobsRequest(state=common_pb2.JOB_STATE_FAILED, page_size=50)),
        "get_project": lambda: stub.GetProject(gateway_pb2.GetProjectRequest(project_id=seeded["project"])),
        "watch_job_replay": replay,
    }


def page_through(stub, seeded: dict) -> dict:
    """Every project, page by page, as the SDK walks them: none missing, none empty."""
    start, request, listed = time.perf_counter(), gateway_pb2.ListProjectsRequest(page_size=1000), 0
    while True:
        page = stub.ListProjects(request)
        assert all(p.id and p.name for p in page.projects)
        listed += len(page.projects)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert listed == seeded["projects"], (listed, seeded["projects"])
    children = stub.ListProjects(gateway_pb2.ListProjectsRequest(parent_id=seeded["parent"], page_size=50))
    assert len(children.projects) == 9, "the parent's nine children"
    return {"projects": listed, "seconds": round(time.perf_counter() - start, 2)}


def watchers(address: str, seeded: dict, count: int, pid: int, rounds: int) -> dict:
    """count WatchJob streams open on one queued job: the gateway's memory, GetProject's latency while they
    are open, and how long until every one of them has the job's end once it is cancelled."""
    channels = [grpc.insecure_channel(address) for _ in range(max(1, count // 100))]
    stubs = [gateway_pb2_grpc.GatewayServiceStub(c) for c in channels]
    try:
        rss_before = rss_mb(pid)
        streams = [stubs[i % len(stubs)].WatchJob(gateway_pb2.WatchJobRequest(job_id=seeded["queued_job"]),
                                                  timeout=300) for i in range(count)]
        assert all(next(s).event.sequence == 1 for s in streams)
        figures = {"watchers": count, "gateway_rss_mb_before": round(rss_before, 1),
                   "gateway_rss_mb_with_watchers": round(rss_mb(pid), 1),
                   "get_project_with_watchers": alternated({"get": lambda: stubs[0].GetProject(
                       gateway_pb2.GetProjectRequest(project_id=seeded["project"]))}, rounds)["get"]}
        start = time.perf_counter()
        stubs[0].CancelJob(gateway_pb2.CancelJobRequest(job_id=seeded["queued_job"]))
        ends = [[r.event.state for r in s] for s in streams]
        figures["all_ends_delivered_ms"] = round((time.perf_counter() - start) * 1000, 1)
        assert ends == [[common_pb2.JOB_STATE_CANCELLED]] * count
        return figures
    finally:
        for c in channels:
            c.close()


@contextlib.contextmanager
def catalog_database(engine: str) -> Iterator[str]:
    """An empty database on the engine; a pgserver PostgreSQL 16 for "postgresql"."""
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        if engine == "sqlite":
            yield f"sqlite:///{tmp}/catalog.db"
            return
        import pgserver

        server = pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            name = f"bench_{uuid.uuid4().hex[:8]}"
            server.psql(f"CREATE DATABASE {name};")
            yield server.get_uri(name)
        finally:
            server.cleanup()


def seeded_gateway(stack: contextlib.ExitStack, engine: str, size: int, settings) -> tuple:
    """A catalog on engine with size projects and jobs, and a gateway process serving it (running no jobs)."""
    url = stack.enter_context(catalog_database(engine))
    database = Database(url)
    database.migrate()
    start = time.perf_counter()
    seeded = seed(database, size)
    seeded["seed_s"] = round(time.perf_counter() - start, 1)
    database.dispose()
    gateway = settings.__class__(**{**vars(settings), "database_url": url, "max_jobs": 0})
    process, address = stack.enter_context(service_process("gateway", gateway))
    return seeded, process, address


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 100_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--create-seconds", type=float, default=5.0)
    parser.add_argument("--watchers", type=int, default=1000)
    args = parser.parse_args()
    small, large = (str(n) for n in args.sizes)
    figures: dict = {}
    with seaweed() as (_, settings):
        for engine in args.engines:
            with contextlib.ExitStack() as stack:
                sides = {str(size): seeded_gateway(stack, engine, size, settings) for size in args.sizes}
                channels = {side: stack.enter_context(grpc.insecure_channel(address))
                            for side, (_, _, address) in sides.items()}
                stubs = {side: gateway_pb2_grpc.GatewayServiceStub(ch) for side, ch in channels.items()}
                per_side = {side: calls(stubs[side], seeded) for side, (seeded, _, _) in sides.items()}
                result: dict = {side: {"seed_s": seeded["seed_s"], "page_through_all_projects":
                                       page_through(stubs[side], seeded)} for side, (seeded, _, _) in sides.items()}
                for call in per_side[small]:
                    measured = alternated({side: per_side[side][call] for side in sides}, args.rounds)
                    for side in sides:
                        result[side][call] = measured[side]
                for side, (seeded, process, address) in sides.items():
                    result[side]["create_project_per_s"] = round(creates_per_second(address, args.create_seconds), 1)
                seeded, process, address = sides[large]
                result[large]["watch"] = watchers(address, seeded, args.watchers, process.pid, args.rounds)
                result[large]["gateway_peak_rss_mb"] = round(peak_rss_mb(process.pid), 1)
                result["flat"] = {call: round(result[large][call]["p99_ms"] / result[small][call]["p99_ms"], 2)
                                  for call in per_side[small]}
                figures[engine] = result
                print(engine, json.dumps(result), file=sys.stderr, flush=True)
    emit(figures)


if __name__ == "__main__":
    main()
