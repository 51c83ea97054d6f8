"""What observability costs: the whole flow through the services with Prometheus metrics and OpenTelemetry
tracing on, against both off, alternated, median of 3 each.

On: every service serves /metrics on its own port (scraped every SCRAPE_S seconds, as a Prometheus would) and
exports its spans over OTLP/gRPC (the SDK's defaults) to a small collector in a process of its own (it counts
what it receives, to show the export really happened). Off: no metrics endpoint, no OTEL_EXPORTER_OTLP_ENDPOINT
(so no TracerProvider).

The flow, as bench/flow.py's services side: SeaweedFS and the five services as real processes; import the
real yolov4-tiny and the 80 vtest frames, optimize (Performance preset), benchmark parent and child, evaluate
the child. Also a unary RPC loop (GetProject), where a per-call cost would show most. Prints one JSON object
last, with on_over_off (target <= 1.02): the median of each round's on/off ratio, the two sides of a round run
back to back. Each run also gives each service's CPU time over the flow (flow_cpu_s: where a cost lands).
--rpc-only: a gateway alone, GetProject's latency with everything off, metrics only and tracing only.
--containers adds the deployment's figures from deploy/containers/stack.py run (the image built offline, the dev
overlay as podman containers, the demo flow): the image's size and the cold start from the first container
started to every probe passing.

    .venv/bin/python bench/overhead.py [--runs 3] [--duration 2] [--rpcs 2000] [--rpc-only] [--containers]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REPO, Steps, cpu_s, emit, free_port, median, seaweed, service_process, services, tiny_flow  # noqa: E402
from services.reference_models import yolov4_tiny  # noqa: E402
from workbench.client import WorkbenchClient  # noqa: E402

SCRAPE_S = 5.0


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that counts spans and traces."""

    def __init__(self) -> None:
        self.spans, self.traces, self._lock = 0, set(), threading.Lock()

    def Export(self, request, context):
        with self._lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.spans += len(scope.spans)
                    self.traces.update(span.trace_id for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def _collect(pipe) -> None:
    """The collector's process: serve until told to stop, then send back (spans, traces)."""
    receiver = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    pipe.send(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    pipe.recv()
    server.stop(0)
    pipe.send((receiver.spans, len(receiver.traces)))


@contextlib.contextmanager
def collector():
    """An OTLP endpoint in a process of its own (receiving must not take this process' CPU from the client
    being timed); yields (endpoint, received): received gets (spans, traces) once the block ends."""
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_collect, args=(theirs,), daemon=True)
    process.start()
    port = ours.recv()
    counts: list[tuple[int, int]] = []
    try:
        yield f"http://127.0.0.1:{port}", counts
    finally:
        ours.send("stop")
        counts.append(ours.recv())
        process.join(timeout=10)


@contextlib.contextmanager
def scraping(ports: list[int]):
    """GET every /metrics every SCRAPE_S seconds; yields the list of (scrapes, bytes) done."""
    done, stop = [0, 0], threading.Event()

    def loop():
        while not stop.wait(SCRAPE_S):
            for port in ports:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    done[1] += len(response.read())
                done[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """os.environ with values, for the service processes started inside (service_process copies it)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_flow(on: bool, duration: float, rpcs: int) -> dict:
    steps = Steps()
    with contextlib.ExitStack() as stack:
        _, settings = stack.enter_context(seaweed())
        metrics_ports: list[int] = []
        received: list[tuple[int, int]] = []
        if on:
            endpoint, received = stack.enter_context(collector())
            stack.enter_context(environment({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}))

        def own(_name: str, settings):
            if not on:
                return settings
            metrics_ports.append(free_port())
            return dataclasses.replace(settings, metrics_listen=f"127.0.0.1:{metrics_ports[-1]}")

        client, _, processes = stack.enter_context(services(settings, own))
        scrapes = stack.enter_context(scraping(metrics_ports)) if on else None
        cpu_before = {name: cpu_s(p.pid) for name, p in processes.items()}
        project_id, fps = tiny_flow(client, steps, duration)
        cpu = {name: round(cpu_s(p.pid) - cpu_before[name], 2) for name, p in processes.items()}
        start_rpcs = time.perf_counter()
        for _ in range(rpcs):
            client.get_project(project_id)
        rpc_us = (time.perf_counter() - start_rpcs) / rpcs * 1e6
        figures = {"steps_s": steps.seconds, "flow_s": round(sum(steps.seconds.values()), 2),
                   "rpc_us": round(rpc_us, 1), "fps": [round(f, 1) for f in fps], "flow_cpu_s": cpu}
        if on:
            figures["scrapes"], figures["scraped_bytes"] = scrapes
    if received:  # the services exited before the collector: their last batches are in
        figures["spans_exported"], figures["traces_exported"] = received[0]
    return figures


def rpc_by_mode(rounds: int, rpcs: int) -> dict[str, float]:
    """A gateway process alone: GetProject's latency with everything off, metrics only and tracing only
    (alternated, median of rounds), to tell the two costs apart."""
    results: dict[str, list[float]] = {"off": [], "metrics": [], "tracing": []}
    with seaweed() as (_, settings):
        for _ in range(rounds):
            for mode in results:
                with contextlib.ExitStack() as stack:
                    own = settings
                    if mode == "metrics":
                        own = dataclasses.replace(settings, metrics_listen=f"127.0.0.1:{free_port()}")
                    if mode == "tracing":
                        endpoint, _ = stack.enter_context(collector())
                        stack.enter_context(environment({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}))
                    client = WorkbenchClient(stack.enter_context(service_process("gateway", own))[1])
                    stack.callback(client.close)
                    project = client.create_project("p")
                    for _ in range(200):  # warm: connections, caches
                        client.get_project(project.id)
                    start = time.perf_counter()
                    for _ in range(rpcs):
                        client.get_project(project.id)
                    results[mode].append((time.perf_counter() - start) / rpcs * 1e6)
    return {mode: round(median(values), 1) for mode, values in results.items()}


def containers() -> dict:
    """deploy/containers/stack.py run's figures: up (building what is missing), the flow, down."""
    done = subprocess.run([sys.executable, str(REPO / "deploy" / "containers" / "stack.py"), "run"], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"deploy/containers/stack.py run failed:\n{done.stderr[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {"image_size_bytes": figures["image_size_bytes"], "cold_start_s": figures["cold_start_s"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per benchmark")
    parser.add_argument("--rpcs", type=int, default=2000, help="GetProject calls in the unary loop")
    parser.add_argument("--rpc-only", action="store_true", help="only the gateway's unary latency by mode")
    parser.add_argument("--containers", action="store_true", help="also the image's size and its cold start")
    args = parser.parse_args()
    if args.rpc_only:
        by_mode = rpc_by_mode(args.runs, args.rpcs)
        emit({"get_project_us": by_mode, "metrics_over_off": round(by_mode["metrics"] / by_mode["off"], 3),
              "tracing_over_off": round(by_mode["tracing"] / by_mode["off"], 3)})
        return
    yolov4_tiny()  # fetch the weights before timing
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for index in range(args.runs):
        # alternate, and swap which side goes first each round: drift on a shared machine hits both
        order = ("off", "on") if index % 2 == 0 else ("on", "off")
        for side in order:
            figures = run_flow(side == "on", args.duration, args.rpcs)
            runs[side].append(figures)
            print(f"{side}: flow {figures['flow_s']:.1f} s, GetProject {figures['rpc_us']:.0f} us"
                  + (f", {figures['spans_exported']} spans exported" if side == "on" else ""), file=sys.stderr)
    deployment = containers() if args.containers else {}
    flow = {side: median([r["flow_s"] for r in results]) for side, results in runs.items()}
    rpc = {side: median([r["rpc_us"] for r in results]) for side, results in runs.items()}
    # a round's two sides ran back to back, under the same load: their ratio cancels the machine's drift
    ratios = [on["flow_s"] / off["flow_s"] for on, off in zip(runs["on"], runs["off"])]
    emit({
        "runs": runs,
        "flow_off_s": flow["off"], "flow_on_s": flow["on"],
        "rpc_off_us": rpc["off"], "rpc_on_us": rpc["on"],
        "rpc_on_over_off": round(rpc["on"] / rpc["off"], 3),
        "round_ratios": [round(r, 3) for r in ratios],
        "on_over_off": round(median(ratios), 3),
        "on_median_over_off_median": round(flow["on"] / flow["off"], 3),
        "target": "on_over_off <= 1.02",
        **deployment,
    })


if __name__ == "__main__":
    main()
