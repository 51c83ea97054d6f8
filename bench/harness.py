"""Shared pieces of the bench scripts: a throwaway SeaweedFS, services as real processes, memory, medians.

Every bench prints its figures as one JSON object on its last line. The machine is shared and noisy,
so compare sides measured in one run, alternating them, and quote medians.

The S3 server, the settings and the yolov4-tiny project are set up by tests/harness.py, the plain
helpers the tests' fixtures use as well: a bench measures the setup the tests check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.object_store import ObjectStore
from services.common.seaweed import SeaweedServer
from services.common.settings import Settings
from services.reference_models import DATA, yolov4_tiny
from services.stack import LocalStack
from tests.harness import s3_settings, start_seaweed, stop_seaweed, tiny_project
from workbench.client import WorkbenchClient
from workbench.v1 import common_pb2, gateway_pb2, quantizer_pb2

REPO = Path(__file__).resolve().parents[1]
FRAMES = sorted((DATA / "vtest").glob("*.jpg"))  # the demo's 80 pedestrian frames
WORKERS = ("converter", "quantizer", "benchmark", "accuracy")


class Steps:
    """Wall time of named steps: `with steps.step("convert"): ...`; say(line) hears each as it ends."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.say = say
        self.current = ""  # the step running now (the last one, after it)

    @contextlib.contextmanager
    def step(self, name: str):
        start, self.current = time.perf_counter(), name
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        if self.say:
            self.say(f"{name}: {self.seconds[name]:.1f} s")

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def seaweed() -> Iterator[tuple[SeaweedServer, Settings]]:
    """A throwaway SeaweedFS with the bucket "bench", and settings for it with a SQLite catalog beside it."""
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as state:
        server = start_seaweed(state, "bench")
        try:
            settings = s3_settings(server, "bench", f"sqlite:///{state}/catalog.db")
            ObjectStore.from_settings(settings).ensure_bucket("bench")
            yield server, settings
        finally:
            stop_seaweed(server)


@contextlib.contextmanager
def service_process(name: str, settings: Settings) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m services.<name>` on a free port, as the local stack runs it; yields (process, address)."""
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, **{f"WORKBENCH_{k.upper()}": str(v) for k, v in vars(settings).items()},
           "WORKBENCH_LISTEN": address, "WORKBENCH_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env, cwd=REPO)
    try:
        wait_serving(address)
        yield process, address
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def services(settings: Settings, own: Callable[[str, Settings], Settings] = lambda _name, settings: settings
             ) -> Iterator[tuple[WorkbenchClient, Settings, dict[str, subprocess.Popen]]]:
    """The four workers and a gateway dialing them, as real processes on settings (own(name, settings): a
    process's own settings); yields a client of the gateway, the gateway's settings and the processes by name."""
    with contextlib.ExitStack() as stack:
        processes, addresses = {}, {}
        for name in WORKERS:
            processes[name], addresses[name] = stack.enter_context(service_process(name, own(name, settings)))
        settings = dataclasses.replace(settings, **{f"{name}_addr": address for name, address in addresses.items()})
        processes["gateway"], gateway = stack.enter_context(service_process("gateway", own("gateway", settings)))
        client = stack.enter_context(WorkbenchClient(gateway, timeout=120))
        yield client, settings, processes


def tiny_flow(client: WorkbenchClient, steps: Steps, duration: float) -> tuple[str, list[float]]:
    """The demo flow through a gateway, a step each: convert (the real yolov4-tiny), dataset (the 80 vtest
    frames), quantize (Performance preset), benchmark (parent and child, duration s each), compare (the child's
    report against the parent). Returns the parent project's id and the two benchmarks' FPS."""
    files = yolov4_tiny()
    with steps.step("convert"):
        model = client.wait_job(client.import_darknet("tiny", files.cfg, files.weights, files.names).id)
    with steps.step("dataset"):
        dataset = client.wait_job(client.import_dataset("vtest", FRAMES).id)
    project = client.create_project("tiny", model_id=model.output.model_id, dataset_id=dataset.output.dataset_id)
    with steps.step("quantize"):
        child = client.wait_job(client.optimize_project(project.id, quantizer_pb2.QuantizationConfig(
            preset=quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE)).id).output.project_id
    fps = []
    with steps.step("benchmark"):
        for project_id in (project.id, child):
            fps.append(client.wait_job(client.benchmark_project(project_id, common_pb2.BenchmarkConfig(
                duration_seconds=duration)).id).output.benchmark.throughput_fps)
    with steps.step("compare"):
        client.wait_job(client.evaluate_project(child).id)
    return project.id, fps


def wait_serving(address: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not serving after {timeout}s")
            time.sleep(0.2)


def cpu_s(pid: int | str = "self") -> float:
    """A process' CPU time so far (user and system), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory (VmHWM) of a process, in MB."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory now (VmRSS) of a process, in MB."""
    return _status_mb(pid, "VmRSS")


def _status_mb(pid: int | str, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def reset_peak_rss(pid: int | str = "self") -> None:
    """Let VmHWM restart from the current RSS (Linux: write 5 to clear_refs)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def median(values: list[float]) -> float:
    return statistics.median(values)


def emit(figures: dict) -> None:
    print(json.dumps(figures))


@contextlib.contextmanager
def local_stack() -> Iterator[tuple[LocalStack, WorkbenchClient]]:
    """`workbench-dev up` in a throwaway home on free ports: SeaweedFS and the five services as real processes."""
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as home:
        stack = LocalStack(Path(home), free_ports=True)
        try:
            stack.up()
            client = WorkbenchClient(stack.address(), timeout=120)
            yield stack, client
            client.close()
        finally:
            stack.kill()


def import_tiny(client: WorkbenchClient, frames: list[Path]) -> gateway_pb2.Project:
    """The real yolov4-tiny and some frames through the gateway, as a project (as the tests' parent)."""
    return tiny_project(client, frames, dataset_name="frames", project_name="yolov4-tiny")
