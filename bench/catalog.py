"""The catalog under load: list, get and replay latencies at 1,000 and 100,000 records, creates per second.

    .venv/bin/python bench/catalog.py [--sizes 1000 5000 100000] [--engines sqlite postgresql]

For each engine and size, projects and jobs (10 events each) are written straight into an empty catalog
database, then a gateway process serves it and every figure is measured over gRPC: p50/p99 of the first
page of ListProjects, ListProjects by parent, ListJobs by project and by state, GetProject, the replay of
a finished job's events (WatchJob), and CreateProject per second from 16 clients with their own channels.
At the largest size, 1,000 WatchJob streams are opened on one queued job: the gateway's memory with them,
GetProject's latency while they are open, and the time until all have the job's end once it is cancelled.
`flat` is the p99 at the largest size over the p99 at the smallest (the target: at most 1.5). The last
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
        # one job that stays queued (the bench gateway runs no jobs): what the watchers watch
        waiting = common_pb2.Job(id=ids("job", 1, start_ms + count)[0], kind=common_pb2.JOB_KIND_BENCHMARK,
                                 state=common_pb2.JOB_STATE_QUEUED, last_sequence=1)
        first = common_pb2.JobEvent(job_id=waiting.id, sequence=1, state=waiting.state)
        tx.execute(schema.jobs.insert().values(id=waiting.id, kind=waiting.kind, state=waiting.state, request=b"",
                                               body=waiting.SerializeToString(), last_sequence=1))
        tx.execute(schema.job_events.insert().values(job_id=waiting.id, sequence=1, body=first.SerializeToString()))
    if not database.is_sqlite:
        with database.connect_raw() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    return {"parent": project_ids[(count // 2) - (count // 2) % 10], "project": project_ids[count // 2],
            "job": job_ids[count // 2], "queued_job": waiting.id, "projects": count}


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
        # every record, page by page, as the SDK walks them: none missing, none empty
        start, request, listed = time.perf_counter(), gateway_pb2.ListProjectsRequest(page_size=1000), 0
        while True:
            page = stub.ListProjects(request)
            assert all(p.id and p.name for p in page.projects)
            listed += len(page.projects)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        figures["page_through_all_projects"] = {"projects": listed, "seconds": round(time.perf_counter() - start, 2)}
        assert listed == seeded["projects"], (listed, seeded["projects"])
        pages = stub.ListProjects(gateway_pb2.ListProjectsRequest(parent_id=seeded["parent"], page_size=50))
        assert len(pages.projects) == 9, "the parent's nine children"
    return figures


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
                   "get_project_with_watchers": latencies(lambda: stubs[0].GetProject(
                       gateway_pb2.GetProjectRequest(project_id=seeded["project"])), rounds)}
        start = time.perf_counter()
        stubs[0].CancelJob(gateway_pb2.CancelJobRequest(job_id=seeded["queued_job"]))
        ends = [[r.event.state for r in s] for s in streams]
        figures["all_ends_delivered_ms"] = round((time.perf_counter() - start) * 1000, 1)
        assert ends == [[common_pb2.JOB_STATE_CANCELLED]] * count
        return figures
    finally:
        for c in channels:
            c.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


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
    parser.add_argument("--watchers", type=int, default=1000)
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
                    gateway = settings.__class__(**{**vars(settings), "database_url": url, "max_jobs": 0})
                    with service_process("gateway", gateway) as (process, address):
                        result = measure(address, seeded, args.rounds)
                        result["create_project_per_s"] = round(creates_per_second(address, args.create_seconds), 1)
                        if size == max(args.sizes):
                            result["watch"] = watchers(address, seeded, args.watchers, process.pid, args.rounds)
                        result["gateway_peak_rss_mb"] = round(peak_rss_mb(process.pid), 1)
                    result["seed_s"] = round(seed_s, 1)
                    figures[engine][str(size)] = result
                    print(engine, size, result, file=sys.stderr, flush=True)
            small, large = str(min(args.sizes)), str(max(args.sizes))
            figures[engine]["flat"] = {
                call: round(value["p99_ms"] / figures[engine][small][call]["p99_ms"], 2)
                for call, value in figures[engine][large].items() if isinstance(value, dict) and "p99_ms" in value}
    emit(figures)


if __name__ == "__main__":
    main()
