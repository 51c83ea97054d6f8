"""`workbench-dev demo`: the whole YOLOv4 optimization flow on the local stack, ending in an HTML report.

Import the Darknet model and the frames -> project -> INT8 child project -> benchmark both ->
accuracy report (the child's predictions against the parent's) -> comparison -> report.html. A client of the
gateway through the SDK like any other: it imports no service's code.
"""

from __future__ import annotations

import html
import math
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
            "parent_id": self.parent.id,
            "parent_fps": round(a.throughput_fps, 2), "int8_fps": round(b.throughput_fps, 2),
            "speedup": round(self.comparison.throughput_ratio, 3),
            "parent_latency_ms": round(a.latency.median_ms, 2), "int8_latency_ms": round(b.latency.median_ms, 2),
            "parent_precision": a.inference_precision, "images": c.images, "a_int8": c.total_a,
            "b_parent": c.total_b, "matches": c.matches, "f1": round(c.f1, 4),
            "parent_agreement": round(c.parent_agreement, 4),
            **_drop_summary(self.child.optimization.result),
            "most_different": [{"image": r.image, "a": r.a, "b": r.b, "matches": r.matches}
                               for r in self.most_different],
            "report": str(self.html_path),
        }


def _drop_summary(q: quantizer_pb2.QuantizationResult) -> dict:
    """The INT8 model's accuracy drop against the parent and the verdict on it, when the quantizer measured one."""
    if not q.HasField("accuracy_drop"):
        return {}
    relative = q.effective_config.drop_type == quantizer_pb2.DROP_TYPE_RELATIVE
    return {"accuracy_drop": round(q.accuracy_drop, 4), "max_drop": q.effective_config.max_drop,
            "drop_type": "relative" if relative else "absolute", "within_max_drop": q.within_max_drop}


def _drop_html(q: quantizer_pb2.QuantizationResult) -> str:
    """The drop and its verdict, then the quantizer's warnings (a drop beyond the bound says what to try next)."""
    e = html.escape
    parts = []
    if q.HasField("accuracy_drop"):
        unit = "%" if q.effective_config.drop_type == quantizer_pb2.DROP_TYPE_RELATIVE else "points"
        verdict = "within" if q.within_max_drop else "<b class=warn>beyond</b>"
        bound = q.effective_config.max_drop
        parts.append(f"<p id=accuracy-drop>Accuracy drop against the parent: {100 * q.accuracy_drop:.1f} {unit} "
                     f"({e(q.metric_name)} {q.metric_before:.4f} → {q.metric_after:.4f}), {verdict} the maximum drop "
                     f"of {100 * bound:.1f} {unit} (max_drop {bound:g}).</p>")
    parts.extend(f"<p class=warn>{e(w)}</p>" for w in q.warnings)
    return "".join(parts)


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
    class_rows = list(client.report_rows(report.id, advanced=True, order_by="image,class_name"))
    html_path.write_text(_html(client.get_project(parent.id), child, comparison, report, all_rows, pictures,
                               speed_only, class_rows=class_rows))
    return DemoResult(parent, child, comparison, report, most_different, html_path)


def _precision(row) -> str:
    """Predicted-class precision (matches / A) of a per-class row; "-" where the gateway says it is undefined
    (A = 0)."""
    return f"{row.precision:.2f}" if row.has_precision else "-"


def _rows_table(rows) -> str:
    """The comparison rows as a table: per image (A, B, matches), or per image and class (advanced mode: with the
    class and the predicted-class precision) when the rows carry a class."""
    e = html.escape
    per_class = any(r.class_name for r in rows)
    head = ("<tr><th>image</th>" + ("<th>class</th>" if per_class else "") + "<th>A</th><th>B</th><th>matches</th>"
            + ("<th>precision (matches / A)</th>" if per_class else "") + "</tr>")
    body = "".join(
        f"<tr{' class=diff' if r.a != r.b or r.matches < min(r.a, r.b) else ''}><td>{e(r.image)}</td>"
        + (f"<td class=name>{e(r.class_name)}</td>" if per_class else "")
        + f"<td>{r.a}</td><td>{r.b}</td><td>{r.matches}</td>"
        + (f"<td>{_precision(r)}</td>" if per_class else "") + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def _html(parent, child, comparison, report, rows, pictures, speed_only: bool, class_rows=()) -> str:
    """rows: one ComparisonRow per image; class_rows: the advanced mode's, one per image and class."""
    a, b = comparison.first.last_benchmark, comparison.second.last_benchmark
    c, q = report.result.comparison, child.optimization.result
    e = html.escape
    warning = ("<p class=warn>The weights are generated: the speed is real, the accuracy figures mean nothing.</p>"
               if speed_only else "")
    per_class = (f"<h3>Every class in every image</h3><p>Precision is the predicted-class precision, matches / A; "
                 f"\"-\" where A = 0.</p>{_rows_table(class_rows)}" if class_rows else "")
    layers = "".join(
        f"<tr><td>{e(t.layer_type)}</td><td>{t.first_time_ms:.2f}</td><td>{e(', '.join(t.first_precisions))}</td>"
        f"<td>{t.second_time_ms:.2f}</td><td>{e(', '.join(t.second_precisions))}</td></tr>"
        for t in comparison.layer_types[:12])
    images = "".join(f"<figure><img src='{e(path)}'><figcaption>{e(row.image)}: A={row.a}, B={row.b}, "
                     f"matches={row.matches}</figcaption></figure>" for row, path in pictures)
    candidates = "".join(f"<li>{'<b>' if x.chosen else ''}{e(x.description)}: {e(q.metric_name)} {x.metric:.4f}, "
                         + (f"{x.throughput_fps:.1f} FPS" if x.throughput_fps else "FPS not measured")
                         + f"{'</b>' if x.chosen else ''}</li>" for x in q.candidates)
    conditions = b.conditions
    return f"""<!doctype html><meta charset=utf-8><title>{e(child.name)}</title>
<style>body{{font:14px system-ui;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child,td.name{{text-align:left}}
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
{_drop_html(q)}
<h2>Layers</h2><table><tr><th>type</th><th>parent ms</th><th>precision</th><th>INT8 ms</th><th>precision</th></tr>
{layers}</table>
<h2>Accuracy: INT8 (A) against the parent (B)</h2>
<p>{c.images} images; A = {c.total_a}, B = {c.total_b}, matches = {c.matches} (IoU ≥ 0.5, same class, scores ≥
{c.reference_threshold:.2f}); F1 {c.f1:.4f}; parent agreement (mAP@0.5 against the parent) {c.parent_agreement:.4f}.</p>
<h3>The images that differ most</h3>{images}
<h3>Every image</h3>{_rows_table(rows)}
{per_class}
"""


_FONT = 12  # px, every text of the chart
_GLYPH = 0.65  # a generous average glyph width, in font sizes (DejaVu Sans digits are 0.64)


def _text_width(text: str) -> float:
    return len(text) * _FONT * _GLYPH


def _axis(top: float) -> list[float]:
    """Ticks from 0 to a round number at or above top, 4 to 6 steps of 1, 2, 2.5 or 5 x 10^k."""
    if not (top > 0 and math.isfinite(top)):
        top = 1.0
    raw = top / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _tick(value: float, step: float) -> str:
    decimals = next((d for d in range(7) if abs(round(step, d) - step) < step * 1e-6), 6)
    return f"{value:.{decimals}f}"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _measure(value: float) -> float:
    """A measurement to plot: 0 for one that is missing, negative or not finite."""
    return value if math.isfinite(value) and value > 0 else 0.0


def _place(x: float, y: float, width: float, room: tuple, taken: list) -> tuple:
    """The box (left, top, right, bottom) of a label of this width for the point at x, y: the first place that lies
    inside room and overlaps none of the boxes taken, trying right or left of the point, just above or below it,
    then a line further out each time; then centred on the point, moved sideways into room as need be (a label too
    wide to sit beside its point); failing any, inside room under the labels placed so far."""
    def free(box):
        return (room[0] <= box[0] and box[2] <= room[2] and room[1] <= box[1] and box[3] <= room[3]
                and not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken))

    shifts = [dy for lines in range(8) for dy in (-8 - lines * (_FONT + 4), 8 + _FONT + lines * (_FONT + 4))]
    centred = min(max(x - width / 2, room[0]), room[2] - width)
    boxes = [(x0, y + dy - _FONT, x0 + width, y + dy + _FONT * 0.3)
             for starts in ((x + 9, x - 9 - width), (centred,)) for dy in shifts for x0 in starts]
    place = next((box for box in boxes if free(box)), None)
    if place is None:
        x0 = min(max(x + 9, room[0]), room[2] - width)
        y0 = min(max([t[3] for t in taken] + [y + 8]) + _FONT, room[3] - _FONT * 0.3)
        place = (x0, y0 - _FONT, x0 + width, y0 + _FONT * 0.3)
    return place


def _chart(a, b, labels=("parent", "INT8")) -> str:
    """Throughput against median latency, one labelled point per model, as inline SVG (no script, no fonts to load).

    The margins are sized from the tick labels, and each point's label takes the first place around its point that
    stays inside the plot and clear of the other label and point, so every text reads in full whatever the numbers.
    """
    e = html.escape
    width, height = 640, 360
    points = [(label, _measure(r.latency.median_ms), _measure(r.throughput_fps), color)
              for label, r, color in zip(labels, (a, b), (("#1e6fd9", "#1558b0"), ("#f08000", "#a85a00")))]
    xs, ys = _axis(max(p[1] for p in points) * 1.15), _axis(max(p[2] for p in points) * 1.15)
    x_ticks, y_ticks = [_tick(v, xs[1]) for v in xs], [_tick(v, ys[1]) for v in ys]
    x_title, y_title = "median latency, ms", "throughput, FPS"
    # left to right: the rotated y title, a gap, the y tick labels, the tick marks
    left = 4 + _FONT * 1.25 + 10 + max(map(_text_width, y_ticks)) + 10
    right = width - 8 - _text_width(x_ticks[-1]) / 2
    top, bottom = 10 + _FONT, height - 16 - 2 * _FONT - 12

    def px(value):
        return left + (right - left) * value / xs[-1]

    def py(value):
        return bottom - (bottom - top) * value / ys[-1]

    parts = [f"<rect x='{left:.1f}' y='{top:.1f}' width='{right - left:.1f}' height='{bottom - top:.1f}' "
             f"fill='#fafafa' stroke='#ddd'/>"]
    for value, text in zip(xs, x_ticks):
        x = px(value)
        parts.append(f"<line x1='{x:.1f}' y1='{top:.1f}' x2='{x:.1f}' y2='{bottom + 5:.1f}' stroke='#e4e4e4'/>"
                     f"<text x='{x:.1f}' y='{bottom + 8 + _FONT:.1f}' text-anchor='middle'>{text}</text>")
    for value, text in zip(ys, y_ticks):
        y = py(value)
        parts.append(f"<line x1='{left - 5:.1f}' y1='{y:.1f}' x2='{right:.1f}' y2='{y:.1f}' stroke='#e4e4e4'/>"
                     f"<text x='{left - 8:.1f}' y='{y + _FONT * 0.35:.1f}' text-anchor='end'>{text}</text>")
    parts.append(f"<line x1='{left:.1f}' y1='{bottom:.1f}' x2='{right:.1f}' y2='{bottom:.1f}' stroke='#333'/>"
                 f"<line x1='{left:.1f}' y1='{top:.1f}' x2='{left:.1f}' y2='{bottom:.1f}' stroke='#333'/>"
                 f"<text x='{(left + right) / 2:.1f}' y='{height - 8:.1f}' text-anchor='middle' "
                 f"font-weight='bold'>{x_title}</text>"
                 f"<text x='{4 + _FONT:.1f}' y='{(top + bottom) / 2:.1f}' text-anchor='middle' font-weight='bold' "
                 f"transform='rotate(-90 {4 + _FONT:.1f} {(top + bottom) / 2:.1f})'>{y_title}</text>")

    dots = [(px(x), py(y)) for _, x, y, _ in points]
    taken = [(x - 7, y - 7, x + 7, y + 7) for x, y in dots]  # boxes no label may cover
    room = (left + 2, 2, width - 2, bottom - 2)  # the labels stay right of the y axis and above the x axis
    for (label, latency, fps, (color, ink)), (x, y) in zip(points, dots):
        figures = f": {fps:.1f} FPS, {_ms(latency)} ms"
        text, shown = label + figures, label
        fit = int((room[2] - room[0]) / (_FONT * _GLYPH)) - len(figures)  # characters of the name that fit
        if len(label) > fit:  # only a name longer than the chart
            shown = label[:max(fit - 1, 0)] + "…"
        place = _place(x, y, _text_width(shown + figures), room, taken)
        taken.append(place)
        parts.append(f"<g><title>{e(text)}</title><circle cx='{x:.1f}' cy='{y:.1f}' r='6' fill='{color}'/>"
                     f"<text x='{place[0]:.1f}' y='{place[1] + _FONT:.1f}' fill='#222'><tspan fill='{ink}' "
                     f"font-weight='bold'>{e(shown)}</tspan>{e(figures)}</text></g>")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' width='{width}' "
            f"height='{height}' font-family='system-ui, sans-serif' font-size='{_FONT}' role='img' "
            f"aria-label='{x_title} and {y_title} of both models' style='max-width:100%;height:auto'>"
            + "".join(parts) + "</svg>")


def summary_text(result: DemoResult) -> str:
    s = result.summary()
    lines = [
        f"parent: {s['parent_fps']:.1f} FPS, median latency {s['parent_latency_ms']:.2f} ms ({s['parent_precision']})",
        f"INT8:   {s['int8_fps']:.1f} FPS, median latency {s['int8_latency_ms']:.2f} ms",
        f"speedup x{s['speedup']:.2f}",
        f"comparison on {s['images']} images: A (INT8) {s['a_int8']}, B (parent) {s['b_parent']}, "
        f"matches {s['matches']}, F1 {s['f1']:.3f}, parent agreement {s['parent_agreement']:.3f}",
    ]
    if "accuracy_drop" in s:
        lines.append(f"accuracy drop against the parent {s['accuracy_drop']:.4f} ({s['drop_type']}), "
                     f"{'within' if s['within_max_drop'] else 'BEYOND'} max_drop {s['max_drop']:g}")
        if not s["within_max_drop"]:
            relative = " --relative" if s["drop_type"] == "relative" else ""
            lines.append(f"  to stay within it: workbench optimize {s['parent_id']} --accuracy-aware --max-drop "
                         f"{s['max_drop']:g}{relative}, or keep the most sensitive layers in floating point "
                         "(--ignore PATTERN); the report says more")
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
