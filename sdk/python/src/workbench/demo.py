"""`workbench demo`: the whole YOLOv4 optimization flow on the local stack, ending in an HTML report.

Import the Darknet model and the frames -> project -> INT8 child project -> benchmark both ->
accuracy report (the child's predictions against the parent's) -> comparison -> report.html.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workbench.client import WorkbenchClient
from workbench.v1 import common_pb2, gateway_pb2, quantizer_pb2

PICTURES = 3


@dataclass
class DemoResult:
    parent: gateway_pb2.Project
    child: gateway_pb2.Project
    comparison: gateway_pb2.CompareProjectsResponse
    report: gateway_pb2.Report
    most_different: list
    html_path: Path

    def summary(self) -> dict:
        a, b = self.comparison.first.last_benchmark, self.comparison.second.last_benchmark
        c = self.report.result.comparison
        return {
            "parent_fps": round(a.throughput_fps, 2), "int8_fps": round(b.throughput_fps, 2),
            "speedup": round(self.comparison.throughput_ratio, 3),
            "parent_latency_ms": round(a.latency.median_ms, 2), "int8_latency_ms": round(b.latency.median_ms, 2),
            "parent_precision": a.inference_precision, "images": c.images, "a_int8": c.total_a,
            "b_parent": c.total_b, "matches": c.matches, "f1": round(c.f1, 4),
            "parent_agreement": round(c.parent_agreement, 4),
            "most_different": [{"image": r.image, "a": r.a, "b": r.b, "matches": r.matches}
                               for r in self.most_different],
            "report": str(self.html_path),
        }


def run(client: WorkbenchClient, files: dict[str, Path], dataset: list[Path], *, name: str, speed_only: bool,
        out_root: Path, duration_s: float, on_event: Callable, say: Callable[[str], None]) -> DemoResult:
    say(f"importing the model ({files['cfg'].name}, {files['weights'].stat().st_size / 1e6:.0f} MB of weights)")
    job = client.import_darknet(name, files["cfg"], files["weights"], files.get("names"))
    model = client.wait_job(job.id, on_event).output.model_id
    say(f"importing the dataset ({len(dataset)} files)")
    data = client.wait_job(client.import_dataset(f"{name} frames", dataset).id, on_event).output.dataset_id
    parent = client.create_project(f"{name} on CPU", model_id=model, dataset_id=data, device="CPU")
    say("calibrating to INT8 (the automatic choice measures the presets)")
    child_id = client.wait_job(client.optimize_project(parent.id, quantizer_pb2.QuantizationConfig()).id,
                               on_event).output.project_id
    config = common_pb2.BenchmarkConfig(duration_seconds=duration_s, performance_counters=True)
    for project_id, label in ((parent.id, "parent"), (child_id, "INT8 child")):
        say(f"benchmarking the {label} for {duration_s:.0f} s")
        client.wait_job(client.benchmark_project(project_id, config).id, on_event)
    say("accuracy report: INT8 predictions against the parent's")
    report = client.get_report(client.wait_job(client.evaluate_project(child_id).id, on_event).output.report_id)
    comparison = client.compare_projects(parent.id, child_id)
    rows = list(client.report_rows(report.id, only_differences=True))
    rows.sort(key=lambda r: (r.b - r.matches) + (r.a - r.matches), reverse=True)
    most_different = rows[:5]
    out_dir = out_root / child_id
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = []
    for row in most_different[:PICTURES]:
        path = out_dir / f"image-{row.image_id}.png"
        path.write_bytes(client.report_image(report.id, row.image_id))
        pictures.append((row, path.name))
    child = client.get_project(child_id)
    html_path = out_dir / "report.html"
    all_rows = list(client.report_rows(report.id, order_by="image"))
    html_path.write_text(_html(client.get_project(parent.id), child, comparison, report, all_rows, pictures,
                               speed_only))
    return DemoResult(parent, child, comparison, report, most_different, html_path)


def _html(parent, child, comparison, report, rows, pictures, speed_only: bool) -> str:
    a, b = comparison.first.last_benchmark, comparison.second.last_benchmark
    c, q = report.result.comparison, child.optimization.result
    e = html.escape
    warning = ("<p class=warn>The weights are generated: the speed is real, the accuracy figures mean nothing.</p>"
               if speed_only else "")
    table = "".join(
        f"<tr{' class=diff' if r.a != r.b or r.matches < min(r.a, r.b) else ''}><td>{e(r.image)}</td>"
        f"<td>{r.a}</td><td>{r.b}</td><td>{r.matches}</td></tr>" for r in rows)
    layers = "".join(
        f"<tr><td>{e(t.layer_type)}</td><td>{t.first_time_ms:.2f}</td><td>{e(', '.join(t.first_precisions))}</td>"
        f"<td>{t.second_time_ms:.2f}</td><td>{e(', '.join(t.second_precisions))}</td></tr>"
        for t in comparison.layer_types[:12])
    images = "".join(f"<figure><img src='{e(path)}'><figcaption>{e(row.image)}: A={row.a}, B={row.b}, "
                     f"matches={row.matches}</figcaption></figure>" for row, path in pictures)
    candidates = "".join(f"<li>{'<b>' if x.chosen else ''}{e(x.description)}: {e(q.metric_name)} {x.metric:.4f}, "
                         f"{x.throughput_fps:.1f} FPS{'</b>' if x.chosen else ''}</li>" for x in q.candidates)
    conditions = b.conditions
    return f"""<!doctype html><meta charset=utf-8><title>{e(child.name)}</title>
<style>body{{font:14px system-ui;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}
tr.diff{{background:#fff3e0}}figure{{display:inline-block;margin:0 1em 1em 0;width:48%}}img{{width:100%}}
.warn{{color:#b00;font-weight:bold}}</style>
<h1>{e(parent.name)} → INT8</h1>{warning}
<h2>Speed</h2>
<table><tr><th></th><th>FPS</th><th>median latency, ms</th><th>p90, ms</th><th>precision</th><th>streams</th></tr>
<tr><td>parent</td><td>{a.throughput_fps:.1f}</td><td>{a.latency.median_ms:.2f}</td><td>{a.latency.p90_ms:.2f}</td>
<td>{e(a.inference_precision)}</td><td>{a.runtime_streams}</td></tr>
<tr><td>INT8</td><td>{b.throughput_fps:.1f}</td><td>{b.latency.median_ms:.2f}</td><td>{b.latency.p90_ms:.2f}</td>
<td>{e(b.inference_precision)}</td><td>{b.runtime_streams}</td></tr></table>
<p>Throughput ×{comparison.throughput_ratio:.2f}, median latency ×{comparison.latency_ratio:.2f}; measured on
{e(conditions.device_full_name)} ({conditions.cpu_cores} cores), OpenVINO {e(conditions.openvino_version.split('-')[0])}
{'— <b>disturbed</b>: ' + e(conditions.disturbed_reason) if conditions.disturbed else ''}</p>
{_chart(a, b)}
<h2>Calibration</h2><ul>{candidates}</ul>
<p>{q.calibration_images} calibration images; {len(q.fp_layers)} layers kept in floating point.</p>
<h2>Layers</h2><table><tr><th>type</th><th>parent ms</th><th>precision</th><th>INT8 ms</th><th>precision</th></tr>
{layers}</table>
<h2>Accuracy: INT8 (A) against the parent (B)</h2>
<p>{c.images} images; A = {c.total_a}, B = {c.total_b}, matches = {c.matches} (IoU ≥ 0.5, same class, scores ≥
{c.reference_threshold:.2f}); F1 {c.f1:.4f}; parent agreement (mAP@0.5 against the parent) {c.parent_agreement:.4f}.</p>
<h3>The images that differ most</h3>{images}
<h3>Every image</h3><table><tr><th>image</th><th>A</th><th>B</th><th>matches</th></tr>{table}</table>
"""


def _chart(a, b) -> str:
    """Throughput against latency, one labelled point per model, as inline SVG."""
    points = [("parent", a), ("INT8", b)]
    x_max = max(r.latency.median_ms for _, r in points) * 1.3 or 1
    y_max = max(r.throughput_fps for _, r in points) * 1.3 or 1
    dots = "".join(
        f"<circle cx='{40 + 400 * r.latency.median_ms / x_max:.0f}' cy='{260 - 240 * r.throughput_fps / y_max:.0f}' "
        f"r=6 fill='{color}'/><text x='{50 + 400 * r.latency.median_ms / x_max:.0f}' "
        f"y='{255 - 240 * r.throughput_fps / y_max:.0f}'>{label}: {r.throughput_fps:.1f} FPS, "
        f"{r.latency.median_ms:.1f} ms</text>" for (label, r), color in zip(points, ("#1e6fd9", "#f08000")))
    return (f"<svg width=520 height=290><line x1=40 y1=260 x2=480 y2=260 stroke=#333 /><line x1=40 y1=20 x2=40 y2=260 "
            f"stroke=#333 /><text x=200 y=285>median latency, ms</text><text x=0 y=14>FPS</text>{dots}</svg>")


def summary_text(result: DemoResult) -> str:
    s = result.summary()
    lines = [
        f"parent: {s['parent_fps']:.1f} FPS, median latency {s['parent_latency_ms']:.2f} ms ({s['parent_precision']})",
        f"INT8:   {s['int8_fps']:.1f} FPS, median latency {s['int8_latency_ms']:.2f} ms",
        f"speedup x{s['speedup']:.2f}",
        f"comparison on {s['images']} images: A (INT8) {s['a_int8']}, B (parent) {s['b_parent']}, "
        f"matches {s['matches']}, F1 {s['f1']:.3f}, parent agreement {s['parent_agreement']:.3f}",
    ]
    if s["most_different"]:
        lines.append("most different: " + "; ".join(f"{d['image']} (A {d['a']}, B {d['b']}, matches {d['matches']})"
                                                     for d in s["most_different"]))
    lines.append(f"report: {s['report']}")
    return "\n".join(lines)


def dataset_files(path: Path) -> list[Path]:
    """An archive as it is, or every image in a folder."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    return [path]


def reports_root() -> Path:
    return Path(os.environ.get("WORKBENCH_HOME", Path.home() / ".workbench")) / "reports"
