"""Throughput and latency of a compiled model, measured the way OpenVINO's benchmark_app does.

An AsyncInferQueue of the runtime's optimal number of requests, input tensors set once per request,
start_async() in a loop until the duration (or iteration count) is spent, rounded up to whole waves
of requests; latency is each request's own `latency`, throughput is frames over the wall time.
Per-layer counters come from a separate short run, so profiling never slows the timed one.

Measurements on one machine take turns (`measuring_turn`): every run of the loop holds a machine-wide
lock, so the benchmark service's measurements and the quantizer's candidate measurements never overlap.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints

from workbench_runtime.errors import FailedPrecondition, InvalidArgument
from services.common import cpu
from services.common.openvino_errors import reason
from services.common.progress import Report
from services.common.settings import Settings

log = logging.getLogger(__name__)
HINTS = {"throughput": hints.PerformanceMode.THROUGHPUT, "latency": hints.PerformanceMode.LATENCY}
PRECISIONS = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}
PROFILE_ITERATIONS = 20
# Other processes using more CPU than this (in cores, on average) during a measurement disturb it.
DISTURBED_CORES = 0.25
# Where the machine-wide measuring lock lives: a folder every measuring process on the machine shares.
LOCK_DIR_ENV = "WORKBENCH_MEASURE_LOCK_DIR"
LOCK_NAME = "workbench-measure.lock"
WAIT_STAGE = "queued"  # the progress stage of a measurement waiting for its turn (as other waits in a job)
TURN_POLL_S = 0.05  # how soon a waiting measurement notices that the lock is free
TURN_REPORT_S = 1.0  # how often a waiting measurement says so (each report also lets a cancellation through)


@dataclass(frozen=True)
class BenchConfig:
    device: str = "CPU"
    hint: str = "throughput"  # throughput | latency | none
    streams: int = 0  # 0: the runtime chooses
    infer_requests: int = 0
    batch: int = 0  # 0: the model's batch
    threads: int = 0
    duration_s: float = 10.0
    iterations: int = 0  # when set, stop after this many instead of after duration_s
    cache_dir: str = ""  # compiled-model cache
    performance_counters: bool = False
    inference_precision: str = ""  # f32 | bf16 | f16; empty: the runtime's choice


@dataclass
class LayerTime:
    name: str
    layer_type: str
    exec_precision: str
    exec_type: str
    real_time_ms: float


@dataclass
class BenchResult:
    config: BenchConfig
    throughput_fps: float
    latency_ms: dict[str, float]  # median, average, min, max, p90, p99
    compile_s: float
    first_inference_ms: float
    iterations: int
    duration_s: float
    runtime_streams: int
    runtime_infer_requests: int
    runtime_threads: int
    inference_precision: str
    conditions: dict[str, object]
    layers: list[LayerTime] = field(default_factory=list)
    # SHA-256 of each distinct sample (one batch item of the first input) the requests carried: which data,
    # and how many different inputs, the figure was measured on (dataset images, or random data)
    samples: list[str] = field(default_factory=list)


def conditions(core: ov.Core, device: str) -> dict[str, object]:
    """What a figure was measured under; never quote a number without it."""
    return {
        "cpu_model": cpu.model_name(),
        "cpu_cores": os.cpu_count() or 0,
        "load_average": round(os.getloadavg()[0], 2),
        "openvino_version": ov.get_version(),
        "device_full_name": core.get_property(device, props.device.full_name()),
    }


def prepare(model: ov.Model, config: BenchConfig) -> ov.Model:
    """Validate the configuration against the model and the runtime; reshape to the batch."""
    core = ov.Core()
    if config.device.split(":")[0].split(".")[0] not in {d.split(".")[0] for d in core.available_devices} | {
            "AUTO", "MULTI", "HETERO"}:
        raise InvalidArgument(f"unknown device {config.device!r}; this machine has {', '.join(core.available_devices)}",
                              field="config.device")
    if config.duration_s <= 0 and config.iterations <= 0:
        raise InvalidArgument("give a positive duration_seconds or iterations", field="config.duration_seconds")
    for name in ("streams", "infer_requests", "batch", "threads"):
        if getattr(config, name) < 0:
            raise InvalidArgument(f"{name} must not be negative", field=f"config.{name}")
    if config.hint not in (*HINTS, "none"):
        raise InvalidArgument(f"unknown performance hint {config.hint!r}", field="config.hint")
    if config.inference_precision and config.inference_precision not in PRECISIONS:
        raise InvalidArgument(f"inference_precision must be one of {', '.join(PRECISIONS)}",
                              field="config.inference_precision")
    if config.batch:
        shapes = {}
        for port in model.inputs:
            shape = port.get_partial_shape()
            if shape.rank.is_dynamic or shape.rank.get_length() == 0:
                raise InvalidArgument(f"input {port.any_name} has no batch dimension to set", field="config.batch")
            shape[0] = config.batch
            shapes[port.any_name] = shape
        try:
            model.reshape(shapes)
        except Exception as exc:
            raise InvalidArgument(f"the model cannot be reshaped to batch {config.batch}: {reason(exc)}",
                                  field="config.batch") from None
    for port in model.inputs:
        if port.get_partial_shape().is_dynamic:
            raise FailedPrecondition(f"input {port.any_name} has a dynamic shape {port.get_partial_shape()}; "
                                     "give a batch or convert with a static shape", field="model")
    return model


def compile_properties(config: BenchConfig) -> dict:
    properties: dict = {}
    if config.hint in HINTS:
        properties[hints.performance_mode] = HINTS[config.hint]
    if config.streams:
        properties[props.num_streams] = config.streams
    if config.infer_requests and config.hint != "none":
        properties[hints.num_requests] = config.infer_requests
    if config.threads:
        properties[props.inference_num_threads] = config.threads
    if config.cache_dir:
        properties[props.cache_dir] = config.cache_dir
    if config.inference_precision:
        properties[hints.inference_precision] = PRECISIONS[config.inference_precision]
    return properties


def inputs_for(compiled: ov.CompiledModel, images: np.ndarray | None, seed: int = 0) -> list[dict[int, np.ndarray]]:
    """One set of input tensors per request: dataset images (NCHW, batch 1) tiled to the batch, or random data."""
    rng = np.random.default_rng(seed)
    count = max(1, len(images)) if images is not None else 1
    sets = []
    for i in range(count):
        tensors = {}
        for index, p in enumerate(compiled.inputs):
            dims = list(p.shape)
            if images is not None and index == 0 and len(images) and list(images.shape[1:]) == dims[1:]:
                picks = [images[(i * dims[0] + b) % len(images)] for b in range(dims[0])]
                tensors[index] = np.ascontiguousarray(np.stack(picks), dtype=p.get_element_type().to_dtype())
            else:
                tensors[index] = rng.random(dims, dtype=np.float32).astype(p.get_element_type().to_dtype())
        sets.append(tensors)
    return sets


def benchmark(model: ov.Model, config: BenchConfig, images: np.ndarray | None = None,
              report: Report = lambda *a, **k: None, who: str = "") -> BenchResult:
    """Compile, warm up with one inference, then time the async loop; all of it in this machine's measuring
    turn (`measuring_turn`; `who` names this measurement to others waiting for it, e.g. "the benchmark service").
    The conditions say how long it waited for its turn (waited_s) and for whom (waited_for)."""
    model = prepare(model, config)
    with measuring_turn(report, who) as turn:
        result = _measure(model, config, images, report)
    result.conditions.update(turn.conditions())
    return result


def _measure(model: ov.Model, config: BenchConfig, images: np.ndarray | None, report: Report) -> BenchResult:
    core = ov.Core()
    measured_under = conditions(core, config.device)
    report("compile", 0.0, f"compiling for {config.device}")
    started = time.perf_counter()
    try:
        compiled = core.compile_model(model, config.device, compile_properties(config))
    except Exception as exc:
        raise FailedPrecondition(f"{config.device} cannot compile the model: {reason(exc)}",
                                 field="config") from None
    compile_s = time.perf_counter() - started
    nireq = config.infer_requests or compiled.get_property(props.optimal_number_of_infer_requests)
    queue = ov.AsyncInferQueue(compiled, nireq)
    sets = inputs_for(compiled, images)
    for i, request in enumerate(queue):
        for index, data in sets[i % len(sets)].items():
            request.set_input_tensor(index, ov.Tensor(data))
    first = queue[0]
    started = time.perf_counter()
    first.infer()
    first_ms = (time.perf_counter() - started) * 1000
    report("measure", 0.05, f"{nireq} requests")

    times: list[float] = []
    in_flight: set[int] = set()
    iterations, elapsed = 0, 0.0
    last_report = 0.0
    batch = compiled.inputs[0].shape[0] if len(compiled.inputs[0].shape) else 1
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    while (config.iterations and iterations < config.iterations) or \
            (not config.iterations and elapsed < config.duration_s) or iterations % nireq:
        idle = queue.get_idle_request_id()
        if idle in in_flight:
            times.append(queue[idle].latency)
        else:
            in_flight.add(idle)
        queue.start_async()
        iterations += 1
        elapsed = time.perf_counter() - start
        if elapsed - last_report >= 1.0:
            last_report = elapsed
            done = iterations / config.iterations if config.iterations else elapsed / config.duration_s
            report("measure", 0.05 + 0.9 * min(done, 1.0), f"{iterations} iterations",
                   fps=iterations * batch / elapsed)
    queue.wait_all()
    total_s = time.perf_counter() - start
    measured_under.update(_disturbance(cpu_before, _cpu_seconds(), total_s))
    times.extend(queue[i].latency for i in in_flight)
    times.sort()
    result = BenchResult(
        config=config,
        throughput_fps=iterations * batch / total_s,
        latency_ms=_latency(times),
        compile_s=compile_s,
        first_inference_ms=first_ms,
        iterations=iterations,
        duration_s=total_s,
        runtime_streams=int(compiled.get_property(props.num_streams)),
        runtime_infer_requests=nireq,
        runtime_threads=int(compiled.get_property(props.inference_num_threads)),
        inference_precision=compiled.get_property(hints.inference_precision).get_type_name(),
        conditions=measured_under,
        samples=fed_samples(queue),
    )
    if config.performance_counters:
        report("profile", 0.96, "per-layer counters")
        result.layers = profile(core, model, config, sets[0])
    return result


# -- taking turns ---------------------------------------------------------------------------------------

_held = threading.local()  # depth of this thread's hold on the machine's turn (nested turns re-enter)


@dataclass(frozen=True)
class Turn:
    """How a measurement got its turn: seconds it waited, and for whom (empty when it did not wait)."""

    waited_s: float = 0.0
    waited_for: str = ""

    def conditions(self) -> dict[str, object]:
        return {"waited_s": round(self.waited_s, 3), "waited_for": self.waited_for}


def lock_dir() -> str:
    """WORKBENCH_MEASURE_LOCK_DIR, else /dev/shm (a tmpfs every process of the machine sees), else the
    system's temporary folder."""
    configured = Settings.from_env().measure_lock_dir
    if configured:
        return configured
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


@contextmanager
def measuring_turn(report: Report = lambda *a, **k: None, who: str = "",
                   directory: str | None = None) -> Iterator[Turn]:
    """Hold this machine's measuring turn: wait while another measurement holds it, then keep others out.

    Why: a measurement takes the whole CPU (OpenVINO's throughput mode runs a stream per core), so two at once
    share it; on a two-core machine a quantizer candidate measured while the benchmark service measures gets
    about half its FPS, and so does the benchmark, and the automatic preset choice and the project's figures
    both come out wrong. The benchmark service's measurements and the quantizer's candidate measurements both
    run `benchmark()`, which holds the turn around the whole run (compile, warm-up, timed loop, profiling).

    How: an exclusive fcntl.flock on LOCK_NAME in `directory` (default `lock_dir()`), each turn on its own open
    file, so threads of one process take turns as well as processes; the kernel releases it when the holder
    exits, even by a crash. The holder writes `who` into the file; a waiting measurement reports
    "waiting for <who>'s measurement to finish" (stage WAIT_STAGE, no fraction) every TURN_REPORT_S, then how
    long it waited, and the yielded Turn says so for the measurement's conditions. A thread already holding
    the turn re-enters at once (a caller may hold it across several runs). When the lock file cannot be
    opened, measurements go ahead without taking turns (logged).

    What it does not cover: only processes that see the same folder share the lock. Pods in Kubernetes each
    have their own /dev/shm and /tmp, so a quantizer pod and a benchmark pod on one node do not take turns:
    for measurements they should not share a node (pod anti-affinity, or measuring nodes of their own); that
    is a deployment choice, not made here. Nor does it keep other work off the CPU (a calibration, an
    evaluation): that is what the conditions' `disturbed` flag reports.
    """
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield Turn()
        finally:
            _held.depth -= 1
        return
    path = os.path.join(directory or lock_dir(), LOCK_NAME)
    fd = _open_lock(path)
    if fd is None:
        yield Turn()
        return
    try:
        turn = _acquire(fd, report)
        _write_holder(fd, who or f"process {os.getpid()}")
        _held.depth = 1
        try:
            yield turn
        finally:
            _held.depth = 0
            _write_holder(fd, "")
    finally:
        os.close(fd)  # releases the lock


def waits_only(report: Report) -> Report:
    """A report that passes on only a measurement's waiting for its turn, for callers with progress of their own."""

    def passed(stage: str, fraction: float | None = None, message: str = "", **metrics: float) -> None:
        if stage == WAIT_STAGE:
            report(stage, fraction, message, **metrics)

    return passed


def _open_lock(path: str) -> int | None:
    # creating may be refused where another user made the file in a sticky folder (fs.protected_regular);
    # flock needs no write access, only naming the holder does
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDWR, os.O_RDONLY):
        try:
            fd = os.open(path, flags | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            error = exc
            continue
        try:
            os.fchmod(fd, 0o666)  # other users' services take turns too (only its owner may change it)
        except OSError:
            pass
        return fd
    log.warning("measuring without taking turns: cannot open %s (%s)", path, error)
    return None


def _acquire(fd: int, report: Report) -> Turn:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return Turn()
    except BlockingIOError:
        pass
    started = last_report = time.monotonic()
    holder = _holder(fd)
    report(WAIT_STAGE, None, f"waiting for {holder}'s measurement to finish", waited_s=0.0)
    while True:
        time.sleep(TURN_POLL_S)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pass
        holder = _holder(fd) or holder
        now = time.monotonic()
        if now - last_report >= TURN_REPORT_S:
            last_report = now
            report(WAIT_STAGE, None, f"waiting for {holder}'s measurement to finish", waited_s=round(now - started, 1))
    waited = time.monotonic() - started
    report(WAIT_STAGE, None, f"waited {waited:.1f} s for {holder}'s measurement; measuring now", waited_s=round(waited, 2))
    return Turn(waited, holder)


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
    except OSError:
        return "another process"


def _write_holder(fd: int, who: str) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, who.encode()[:200], 0)
    except OSError:  # opened read-only: the turn is held all the same
        pass


def fed_samples(queue: ov.AsyncInferQueue) -> list[str]:
    """SHA-256 of each distinct sample in the requests' first input, as the model read it, in first-seen order."""
    digests: dict[str, None] = {}
    for request in queue:
        data = request.get_input_tensor(0).data
        for sample in data if data.ndim else [data]:
            digests.setdefault(hashlib.sha256(np.ascontiguousarray(sample).tobytes()).hexdigest())
    return list(digests)


def profile(core: ov.Core, model: ov.Model, config: BenchConfig, inputs: dict[int, np.ndarray]) -> list[LayerTime]:
    """Per-layer time and execution precision, summed over a few inferences of a separately compiled model."""
    properties = {**compile_properties(replace(config, cache_dir="")), props.enable_profiling: True}
    request = core.compile_model(model, config.device, properties).create_infer_request()
    totals: dict[str, LayerTime] = {}
    for _ in range(PROFILE_ITERATIONS):
        request.infer(inputs)
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            layer = totals.setdefault(info.node_name, LayerTime(info.node_name, info.node_type,
                                                                _precision(info.exec_type), info.exec_type, 0.0))
            layer.real_time_ms += info.real_time.total_seconds() * 1000 / PROFILE_ITERATIONS
    return sorted(totals.values(), key=lambda layer: -layer.real_time_ms)


def _precision(exec_type: str) -> str:
    # exec_type reads like "jit_avx512_I8" or "brgconv_avx512_amx_bf16_FP32": the precision comes last
    return exec_type.rsplit("_", 1)[-1].upper() if "_" in exec_type else exec_type.upper()


def _latency(times: list[float]) -> dict[str, float]:
    if not times:
        return dict.fromkeys(("median", "average", "min", "max", "p90", "p99"), 0.0)
    values = np.asarray(times)
    return {
        "median": float(np.percentile(values, 50)),
        "average": float(values.mean()),
        "min": float(values[0]),
        "max": float(values[-1]),
        "p90": float(np.percentile(values, 90)),
        "p99": float(np.percentile(values, 99)),
    }


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all processes spent busy, CPU seconds this process spent), from /proc."""
    try:
        fields = open("/proc/stat").readline().split()[1:]
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (sum(int(v) for v in fields[:8]) - int(fields[3]) - int(fields[4])) / ticks  # minus idle, iowait
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    own = os.times()
    return busy, own.user + own.system


def _disturbance(before: tuple[float, float], after: tuple[float, float], seconds: float) -> dict[str, object]:
    """Whether other processes competed for the CPU while we measured, and how much."""
    others = ((after[0] - before[0]) - (after[1] - before[1])) / max(seconds, 1e-9)
    if others > DISTURBED_CORES:
        return {"disturbed": True,
                "disturbed_reason": f"other processes used {others:.2f} CPU cores during the measurement"}
    return {"disturbed": False, "disturbed_reason": ""}
