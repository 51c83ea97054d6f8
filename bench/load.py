"""Control-plane load on the local stack while a quantization and a benchmark run.

SeaweedFS and the five services run as real processes on loopback (a throwaway `workbench-dev up`). After
importing yolov4-tiny and 16 vtest frames, one optimization and one benchmark start; then N clients, each
with its own channel, make a fixed number of gateway calls each, cycling through create/get/list projects,
list/get jobs and watching a finished job to its end. Reported: requests/s, p50/p99 latency, outcomes by
status code, which errors were unexpected (anything but OK, and RESOURCE_EXHAUSTED that carries a retry
hint), and whether the concurrent benchmark flagged itself as disturbed.

    .venv/bin/python bench/load.py [--clients 50] [--requests 40]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, import_tiny, local_stack  # noqa: E402
from services.reference_models import DATA  # noqa: E402
from workbench.client import WorkbenchClient, WorkbenchError  # noqa: E402
from workbench.v1 import common_pb2, gateway_pb2, quantizer_pb2  # noqa: E402

FRAMES = sorted((DATA / "vtest").glob("*.jpg"))[::5]


def client_session(address: str, count: int, project_id: str, finished_job: str, results: list) -> None:
    """One client: its own channel, `count` calls; each call's (operation, code, seconds, retry hint)."""
    client = WorkbenchClient(address, timeout=60)
    stub = client.stub
    calls = [
        ("create_project", lambda: stub.CreateProject(gateway_pb2.CreateProjectRequest(
            name=f"load {uuid.uuid4().hex[:8]}", request_id=uuid.uuid4().hex), timeout=60)),
        ("get_project", lambda: stub.GetProject(gateway_pb2.GetProjectRequest(project_id=project_id), timeout=60)),
        ("list_projects", lambda: stub.ListProjects(gateway_pb2.ListProjectsRequest(page_size=20), timeout=60)),
        ("list_jobs", lambda: stub.ListJobs(gateway_pb2.ListJobsRequest(page_size=20), timeout=60)),
        ("get_job", lambda: stub.GetJob(gateway_pb2.GetJobRequest(job_id=finished_job), timeout=60)),
        ("watch_job", lambda: list(stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=finished_job), timeout=60))),
    ]
    for i in range(count):
        name, call = calls[i % len(calls)]
        start = time.perf_counter()
        try:
            call()
            results.append((name, "OK", time.perf_counter() - start, None))
        except Exception as exc:  # grpc.RpcError: keep its code and retry hint
            error = WorkbenchError.from_rpc_error(exc)
            results.append((name, error.code.name, time.perf_counter() - start, error.retry_after_s))
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="per client")
    args = parser.parse_args()
    with local_stack() as (stack, client):
        project = import_tiny(client, FRAMES)
        finished_job = next(iter(client.list_jobs())).id
        optimize = client.optimize_project(project.id, quantizer_pb2.QuantizationConfig(
            preset=quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE))
        bench = client.benchmark_project(project.id, common_pb2.BenchmarkConfig(duration_seconds=15))
        for event in client.watch_job(bench.id):  # load starts once the measurement does
            if event.progress.stage == "measure":
                break

        results: list = []
        threads = [threading.Thread(target=client_session,
                                    args=(stack.address(), args.requests, project.id, finished_job, results))
                   for _ in range(args.clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start

        bench_job, optimize_job = client.wait_job(bench.id), client.wait_job(optimize.id)
        measured = bench_job.output.benchmark
        health = {name: client_health(stack, name) for name in stack.config()["ports"]}

    latencies = np.array([seconds for _, _, seconds, _ in results]) * 1000
    codes = Counter(code for _, code, _, _ in results)
    unexpected = Counter(f"{name}:{code}" for name, code, _, hint in results
                         if code != "OK" and not (code == "RESOURCE_EXHAUSTED" and hint is not None))
    emit({
        "clients": args.clients,
        "requests": len(results),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(results) / elapsed, 1),
        "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 1),
                       "p99": round(float(np.percentile(latencies, 99)), 1),
                       "max": round(float(latencies.max()), 1)},
        "by_code": dict(codes),
        "shed_with_retry_hint": codes.get("RESOURCE_EXHAUSTED", 0) - sum(
            n for key, n in unexpected.items() if key.endswith("RESOURCE_EXHAUSTED")),
        "unexpected_errors": dict(unexpected),
        "concurrent_benchmark": {"fps": round(measured.throughput_fps, 1),
                                 "disturbed": measured.conditions.disturbed},
        "concurrent_optimization": common_pb2.JobState.Name(optimize_job.state),
        "services_after": health,
        "targets": {"unexpected_errors": "0", "concurrent_benchmark.disturbed": "true"},
    })


def client_health(stack, name: str) -> str:
    with WorkbenchClient(stack.address(name), timeout=5) as probe:
        return probe.health()


if __name__ == "__main__":
    main()
