"""Measurements on one machine take turns: real measurements of a small model, in two processes and in two
threads, each timed from inside the measuring loop (measure._measure, which runs only in the turn).

Every test points WORKBENCH_MEASURE_LOCK_DIR at its own folder, so measurements elsewhere on the machine
(other test sessions) neither wait for these nor make these wait."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import openvino as ov
import pytest

from services.common import measure
from services.common.measure import LOCK_NAME, BenchConfig, benchmark, measuring_turn
from services.quantizer.validation import candidate_fps

REPO = Path(__file__).resolve().parents[2]
WAITING = "waiting for the benchmark service's measurement to finish"

# Another process measuring as the benchmark service does; it prints when its measuring loop starts and ends.
OTHER = """
import sys, time
import openvino as ov
from services.common import measure

inner = measure._measure

def timed(*args, **kwargs):
    print("start", time.time(), flush=True)
    try:
        return inner(*args, **kwargs)
    finally:
        print("end", time.time(), flush=True)

measure._measure = timed
result = measure.benchmark(ov.Core().read_model(sys.argv[1]), measure.BenchConfig(duration_s=float(sys.argv[2])),
                           who="the benchmark service")
print("waited", result.conditions["waited_s"], flush=True)
"""


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    folder = tmp_path / "locks"
    folder.mkdir()
    monkeypatch.setenv(measure.LOCK_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def timed(monkeypatch):
    """(start, end) wall times of each measuring loop run in this process, per thread."""
    spans: dict[str, tuple[float, float]] = {}
    inner = measure._measure

    def timed_measure(*args, **kwargs):
        start = time.time()
        try:
            return inner(*args, **kwargs)
        finally:
            spans[threading.current_thread().name] = (start, time.time())

    monkeypatch.setattr(measure, "_measure", timed_measure)
    return spans


def other_process(model_xml: str, seconds: float) -> tuple[subprocess.Popen, float]:
    """Start the other measurement; return once its measuring loop has begun, with the time it began."""
    other = subprocess.Popen([sys.executable, "-c", OTHER, model_xml, str(seconds)], cwd=REPO, env=os.environ.copy(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = other.stdout.readline().split()
    assert line and line[0] == "start", other.stderr.read()
    return other, float(line[1])


def finish(other: subprocess.Popen) -> dict[str, float]:
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    return {name: float(value) for name, value in (line.split() for line in out.splitlines())}


def test_a_measurement_alone_does_not_wait(model_xml, lock_dir, timed):
    events = []
    started = time.time()
    result = benchmark(ov.Core().read_model(model_xml), BenchConfig(iterations=8), report=lambda *a, **k: events.append(a),
                       who="the quantizer")
    assert result.conditions["waited_s"] == 0.0 and result.conditions["waited_for"] == ""
    assert not [e for e in events if e[0] == "queued"] and events[0][0] == "compile"
    assert timed["MainThread"][0] - started < 0.5  # straight into the loop (the turn was free)
    assert (lock_dir / LOCK_NAME).read_text() == ""  # taken and given back: no holder named


def test_a_measurement_in_another_process_makes_this_one_wait_until_it_ends(model_xml, lock_dir, timed):
    other, other_start = other_process(model_xml, 2.0)
    events = []
    result = benchmark(ov.Core().read_model(model_xml), BenchConfig(duration_s=0.5),
                       report=lambda stage, fraction=None, message="", **m: events.append((stage, message)),
                       who="the quantizer")
    times = finish(other)
    start, _ = timed["MainThread"]
    assert other_start < times["end"] <= start  # this one began only after the other one's loop had ended
    assert times["waited"] == 0.0  # the other one found the turn free
    assert ("queued", WAITING) in events
    assert any(stage == "queued" and message.startswith("waited ") for stage, message in events)
    assert result.conditions["waited_for"] == "the benchmark service"
    assert result.conditions["waited_s"] > 1.0  # the other one's loop lasts 2 s from before this one asked
    assert [stage for stage, _ in events].index("compile") > [stage for stage, _ in events].index("queued")


def test_the_quantizers_candidate_gives_way_to_the_benchmark_service(model_xml, lock_dir, timed):
    """The automatic preset choice's speed measurement waits for a benchmark measuring on the same machine, and
    says so in its progress; none of the loop's own progress (compile, measure) reaches the quantizer's job."""
    other, _ = other_process(model_xml, 2.0)
    events = []
    fps = candidate_fps(ov.Core().read_model(model_xml),
                        lambda stage, fraction=None, message="", **m: events.append((stage, fraction, message)))
    times = finish(other)
    assert fps > 0 and times["end"] <= timed["MainThread"][0]
    assert ("queued", None, WAITING) in events
    assert {stage for stage, _, _ in events} == {"queued"} and {f for _, f, _ in events} == {None}


def test_two_threads_measuring_at_once_take_turns(model_xml, lock_dir, timed):
    results = {}

    def measure_in(name: str) -> None:
        results[name] = benchmark(ov.Core().read_model(model_xml), BenchConfig(duration_s=0.7), who=name)

    threads = [threading.Thread(target=measure_in, args=(name,), name=name) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (a_start, a_end), (b_start, b_end) = sorted(timed.values())
    assert a_end <= b_start  # one after the other, never both
    first, second = sorted(results, key=lambda name: timed[name])
    assert results[first].conditions["waited_s"] == 0.0
    assert results[second].conditions["waited_s"] > 0.3  # the first one's loop alone lasts 0.7 s
    assert results[second].conditions["waited_for"] == first  # the one it waited for, by the name it gave


def test_a_turn_held_across_several_runs_is_not_waited_for_by_its_own_runs(model_xml, lock_dir):
    with measuring_turn(who="a sweep") as turn:
        inner = benchmark(ov.Core().read_model(model_xml), BenchConfig(iterations=4))
        again = benchmark(ov.Core().read_model(model_xml), BenchConfig(iterations=4))
        assert (lock_dir / LOCK_NAME).read_text() == "a sweep"
    assert turn.waited_s == 0.0 and inner.conditions["waited_s"] == again.conditions["waited_s"] == 0.0
