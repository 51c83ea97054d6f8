"""Explore inference configurations: a grid of batch x streams (x requests), its best point, the
best point under a latency limit, the sweet spot (the lowest latency within a few percent of the best
throughput: what a person picks from the chart), and a chart of them all."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import cv2
import numpy as np
import openvino as ov

from workbench_runtime.errors import InvalidArgument
from services.common.measure import BenchConfig, BenchResult, benchmark, waits_only
from services.common.progress import Report

MAX_POINTS = 64
SWEET_SPOT_TOLERANCE = 0.05  # within 5 % of the best throughput counts as "as fast"


@dataclass
class SweepPoint:
    batch: int
    streams: int
    infer_requests: int
    result: BenchResult


@dataclass
class Sweep:
    points: list[SweepPoint]
    best: int
    best_within_latency: int  # -1: no point meets the limit (or none was given)
    sweet_spot: int  # the lowest median latency among points within SWEET_SPOT_TOLERANCE of the best FPS


def grid(batches: list[int], streams: list[int], requests: list[int]) -> list[tuple[int, int, int]]:
    batches, streams, requests = batches or [0], streams or [0], requests or [0]
    for name, values in (("batches", batches), ("streams", streams), ("infer_requests", requests)):
        if any(v < 0 for v in values):
            raise InvalidArgument(f"{name} must not be negative", field=name)
    points = list(itertools.product(batches, streams, requests))
    if len(points) > MAX_POINTS:
        raise InvalidArgument(f"the grid has {len(points)} points; at most {MAX_POINTS}", field="batches")
    return points


def sweep(xml: str, base: BenchConfig, batches: list[int], streams: list[int], requests: list[int],
          latency_limit_ms: float, images: np.ndarray | None = None, report: Report = lambda *a, **k: None,
          on_point=lambda point: None, who: str = "") -> Sweep:
    """Benchmark every grid point in turn (each on a fresh copy of the model, as batch reshapes it); each point
    takes the machine's measuring turn on its own (`who` names the measurer to whoever waits for it)."""
    core, points = ov.Core(), []
    plan = grid(batches, streams, requests)
    for i, (batch, stream_count, request_count) in enumerate(plan):
        report("point", i / len(plan), f"batch {batch or 'model'}, streams {stream_count or 'auto'}, "
                                       f"requests {request_count or 'auto'}")
        config = replace(base, batch=batch, streams=stream_count, infer_requests=request_count,
                         hint="throughput" if base.hint == "none" and not stream_count else base.hint,
                         performance_counters=False)
        result = benchmark(core.read_model(xml), config, images, waits_only(report), who=who)
        point = SweepPoint(batch, stream_count, request_count, result)
        points.append(point)
        on_point(point)
    best = max(range(len(points)), key=lambda i: points[i].result.throughput_fps)
    within = [i for i, p in enumerate(points) if latency_limit_ms and p.result.latency_ms["median"] <= latency_limit_ms]
    best_within = max(within, key=lambda i: points[i].result.throughput_fps) if within else -1
    return Sweep(points, best, best_within, sweet_spot([p.result for p in points]))


def sweet_spot(results: list[BenchResult]) -> int:
    """Index of the lowest median latency among the results within SWEET_SPOT_TOLERANCE of the best
    throughput (ties: the faster one)."""
    fastest = max(r.throughput_fps for r in results)
    near = [i for i, r in enumerate(results) if r.throughput_fps >= fastest * (1 - SWEET_SPOT_TOLERANCE)]
    return min(near, key=lambda i: (results[i].latency_ms["median"], -results[i].throughput_fps))


BEST, WITHIN, SWEET = (200, 90, 30), (40, 160, 40), (30, 140, 230)  # BGR


def chart_png(result: Sweep, latency_limit_ms: float, title: str = "") -> bytes:
    """Throughput against median latency, each point labelled b<batch> s<streams> r<requests>."""
    width, height, margin = 900, 560, 70
    image = np.full((height, width, 3), 255, np.uint8)
    xs = [p.result.latency_ms["median"] for p in result.points]
    ys = [p.result.throughput_fps for p in result.points]
    x_max, y_max = max(xs + [latency_limit_ms]) * 1.15 or 1.0, max(ys) * 1.15 or 1.0

    def at(x: float, y: float) -> tuple[int, int]:
        return (int(margin + x / x_max * (width - 2 * margin)), int(height - margin - y / y_max * (height - 2 * margin)))

    font, black, grey = cv2.FONT_HERSHEY_SIMPLEX, (30, 30, 30), (200, 200, 200)
    cv2.line(image, at(0, 0), at(x_max, 0), black, 1)
    cv2.line(image, at(0, 0), at(0, y_max), black, 1)
    for k in range(1, 5):
        x, y = x_max * k / 5, y_max * k / 5
        cv2.putText(image, f"{x:.1f}", (at(x, 0)[0] - 15, height - margin + 20), font, 0.4, black, 1)
        cv2.putText(image, f"{y:.0f}", (10, at(0, y)[1] + 4), font, 0.4, black, 1)
        cv2.line(image, at(0, y), at(x_max, y), grey, 1)
    cv2.putText(image, "median latency, ms", (width // 2 - 70, height - 20), font, 0.5, black, 1)
    cv2.putText(image, "throughput, FPS", (10, margin - 25), font, 0.5, black, 1)
    cv2.putText(image, title, (margin, 25), font, 0.6, black, 1)
    if latency_limit_ms:
        cv2.line(image, at(latency_limit_ms, 0), at(latency_limit_ms, y_max), (60, 60, 220), 1)
        cv2.putText(image, f"limit {latency_limit_ms:g} ms", (at(latency_limit_ms, 0)[0] + 4, height - margin - 8),
                    font, 0.4, (60, 60, 220), 1)
    # a point may carry several marks: it takes the sweet spot's colour before the others', and one legend line
    # names them all
    marks = [(i, name, color) for i, name, color in ((result.best, "best", BEST),
             (result.best_within_latency, "best under the limit", WITHIN), (result.sweet_spot, "sweet spot", SWEET))
             if i >= 0]
    color_of = {i: color for i, _, color in marks}
    names_of: dict[int, list[str]] = {}
    for i, name, _ in marks:
        names_of.setdefault(i, []).append(name)
    labels = [f"b{p.batch or '-'} s{p.result.runtime_streams} r{p.result.runtime_infer_requests}" for p in result.points]
    for i in range(len(result.points)):
        color = color_of.get(i, (90, 90, 90))
        center = at(xs[i], ys[i])
        cv2.circle(image, center, 6 if i in color_of else 4, color, -1)
        if i == result.sweet_spot:
            cv2.circle(image, center, 11, SWEET, 2)
        cv2.putText(image, labels[i], (center[0] + 14, center[1] - 8), font, 0.4, color, 1)  # clear of the ring
    for row, (i, names) in enumerate(names_of.items()):  # top right
        y = margin + 18 * row
        cv2.circle(image, (width - 290, y - 4), 5, color_of[i], -1)
        cv2.putText(image, f"{' and '.join(names)}: {labels[i]}", (width - 278, y), font, 0.45, color_of[i], 1)
    ok, png = cv2.imencode(".png", image)
    assert ok
    return png.tobytes()
