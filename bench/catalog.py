"""The catalog under load: list, get and replay latencies at 1,000 and 100,000 records, creates per second.

    .venv/bin/python bench/catalog.py [--sizes 1000 5000 100000] [--engines sqlite postgresql]

For each engine and size, projects and jobs (10 events each) are written straight into an empty catalog
database, then a gateway process serves it and every figure is measured over gRPC: p50/p99 of the first
page of ListProjects, ListProjects by parent, ListJobs by project and by state, GetProject, the replay of
a finished job's events (WatchJob), and CreateProject per second from 16 clients with their own channels.
`flat_*` is the p99 at the largest size over the p99 at the smallest (the target: at most 1.5). The last
line is the JSON, keyed by engine, then by size, then by call.
"""

from __future__ import annotations

import argparse
import contextlib
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
from bench.harness import emit, peak_rss_mb, seaweed, service_process  # noqa: E402
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
    if not database.is_sqlite:
        with database.connect_raw() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    return {"parent": project_ids[(count // 2) - (count // 2) % 10], "project": project_ids[count // 2],
            "job": job_ids[count // 2]}


def latencies(call: Callable[[], object], rounds: int) -> dict:
    call()  # warm: the first call pays for the channel and the statement caches
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p99_ms": round(float(np.percentile(times, 99)), 2)}


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


def measure(address: str, seeded: dict, rounds: int) -> dict:
    with grpc.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)

        def replay() -> None:
            events = list(stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=seeded["job"])))
            assert len(events) == EVENTS_PER_JOB

        calls = {
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
        figures = {name: latencies(call, rounds) for name, call in calls.items()}
        pages = stub.ListProjects(gateway_pb2.ListProjectsRequest(parent_id=seeded["parent"], page_size=50))
        assert len(pages.projects) == 9, "the parent's nine children"
    return figures


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--create-seconds", type=float, default=5.0)
    args = parser.parse_args()
    figures: dict = {}
    with seaweed() as (_, settings):
        for engine in args.engines:
            figures[engine] = {}
            for size in args.sizes:
                with catalog_database(engine) as url:
                    database = Database(url)
                    database.migrate()
                    start = time.perf_counter()
                    seeded = seed(database, size)
                    seed_s = time.perf_counter() - start
                    database.dispose()
                    gateway = settings.__class__(**{**vars(settings), "database_url": url})
                    with service_process("gateway", gateway) as (process, address):
                        result = measure(address, seeded, args.rounds)
                        result["create_project_per_s"] = round(creates_per_second(address, args.create_seconds), 1)
                        result["gateway_peak_rss_mb"] = round(peak_rss_mb(process.pid), 1)
                    result["seed_s"] = round(seed_s, 1)
                    figures[engine][str(size)] = result
                    print(engine, size, result, file=sys.stderr, flush=True)
            small, large = str(min(args.sizes)), str(max(args.sizes))
            figures[engine]["flat"] = {
                call: round(figures[engine][large][call]["p99_ms"] / figures[engine][small][call]["p99_ms"], 2)
                for call in figures[engine][large] if isinstance(figures[engine][large][call], dict)}
    emit(figures)


if __name__ == "__main__":
    main()
