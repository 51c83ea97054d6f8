"""The `workbench-dev demo` HTML report: a speed chart whose every text reads in full, and "-" for an undefined
predicted-class precision. Pure rendering from protobuf messages: no services, no network."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import pytest

from services.dev import demo
from workbench.v1 import accuracy_pb2, common_pb2, gateway_pb2, quantizer_pb2

GLYPH = 0.6  # average character width in font sizes, a fair estimate for a sans-serif font


def bench(fps: float, latency_ms: float) -> common_pb2.BenchmarkResult:
    result = common_pb2.BenchmarkResult(throughput_fps=fps, inference_precision="f32", runtime_streams=4)
    result.latency.median_ms = latency_ms
    result.latency.p90_ms = latency_ms * 1.2
    return result


class _Svg(HTMLParser):
    """The first <svg> of a page: its attributes, and each <text> with its attributes and its whole text."""

    def __init__(self):
        super().__init__()
        self.svg: dict | None = None
        self.texts: list[dict] = []
        self.circles: list[dict] = []
        self._inside = 0  # <svg> depth
        self._text: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg" and self.svg is None:
            self.svg, self._inside = attrs, 1
        elif self._inside:
            if tag == "text":
                self._text = {"attrs": attrs, "content": ""}
            elif tag == "circle":
                self.circles.append(attrs)

    def handle_startendtag(self, tag, attrs):
        if self._inside and tag == "circle":
            self.circles.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag == "text" and self._text is not None:
            self.texts.append(self._text)
            self._text = None
        elif tag == "svg" and self._inside:
            self._inside = 0

    def handle_data(self, data):
        if self._text is not None:
            self._text["content"] += data


def parse_svg(page: str) -> _Svg:
    parser = _Svg()
    parser.feed(page)
    parser.close()
    assert parser.svg is not None, "no <svg> in the page"
    return parser


def bounds(svg: _Svg) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of what the SVG shows: its viewBox, or its width and height without one."""
    if "viewbox" in svg.svg:  # HTMLParser lowercases attribute names
        x, y, w, h = (float(v) for v in re.split(r"[\s,]+", svg.svg["viewbox"].strip()))
        return x, y, x + w, y + h
    return 0.0, 0.0, float(svg.svg.get("width", 300)), float(svg.svg.get("height", 150))


def text_box(text: dict, svg: _Svg) -> tuple[float, float, float, float]:
    """The estimated box of a <text>: characters x font size x 0.6 wide, placed by text-anchor; from an ascent of
    one font size above the baseline to 0.3 below it; then turned by a rotate() transform."""
    a = text["attrs"]
    size = float(a.get("font-size", svg.svg.get("font-size", 16)))
    x, y = float(a.get("x", 0)), float(a.get("y", 0))
    width = len(text["content"].strip()) * size * GLYPH
    anchor = a.get("text-anchor", "start")
    left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    corners = [(left, y - size), (left + width, y - size), (left, y + 0.3 * size), (left + width, y + 0.3 * size)]
    transform = a.get("transform", "")
    if transform:
        m = re.fullmatch(r"\s*rotate\(\s*([-\d.]+)(?:[\s,]+([-\d.]+)[\s,]+([-\d.]+))?\s*\)\s*", transform)
        assert m, f"unexpected transform {transform!r}"
        angle = math.radians(float(m.group(1)))
        cx, cy = (float(m.group(2)), float(m.group(3))) if m.group(2) else (0.0, 0.0)
        corners = [(cx + (px - cx) * math.cos(angle) - (py - cy) * math.sin(angle),
                    cy + (px - cx) * math.sin(angle) + (py - cy) * math.cos(angle)) for px, py in corners]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return min(xs), min(ys), max(xs), max(ys)


def overlap(p, q) -> bool:
    return p[0] < q[2] and q[0] < p[2] and p[1] < q[3] and q[1] < p[3]


CASES = {
    "the reported one": ((136.7, 14.2), (402.3, 4.9)),
    "57.5 against 1234.5 FPS, 250 against 0.8 ms": ((57.5, 250.0), (1234.5, 0.8)),
    "0.8 against 250 ms the other way round": ((1234.5, 0.8), (57.5, 250.0)),
    "nearly the same": ((100.0, 10.0), (101.0, 10.1)),
    "exactly the same": ((1000.0, 1.0), (1000.0, 1.0)),
    "huge and tiny": ((0.5, 2000.0), (123456.7, 0.01)),
    "sub-millisecond": ((3.3, 0.3), (3.2, 0.31)),
    "no benchmark yet": ((0.0, 0.0), (0.0, 0.0)),
}


def check_chart(svg_text: str, labels: tuple[str, str] = ("parent", "INT8")):
    svg = parse_svg(svg_text)
    left, top, right, bottom = bounds(svg)
    assert svg.texts, "the chart has no text"
    outside = [(text["content"], tuple(round(v, 1) for v in box)) for text in svg.texts
               for box in [text_box(text, svg)]
               if not (left <= box[0] and box[2] <= right and top <= box[1] and box[3] <= bottom)]
    assert not outside, f"texts leaving the view {(left, top, right, bottom)}: {outside}"
    assert "viewbox" in svg.svg, "the chart has no viewBox: it cannot scale"

    contents = [t["content"].strip() for t in svg.texts]
    x_titles = [c for c in contents if re.search(r"latency", c, re.I) and re.search(r"\bms\b", c)]
    y_titles = [c for c in contents if re.search(r"throughput", c, re.I) and re.search(r"\bFPS\b", c)]
    assert x_titles, f"no x axis title with its name and unit (latency, ms) among {contents}"
    assert y_titles, f"no y axis title with its name and unit (throughput, FPS) among {contents}"

    # one label per point, neither overlapping the other
    point_labels = [t for t in svg.texts if "FPS," in t["content"]]
    assert len(point_labels) == 2, [t["content"] for t in point_labels]
    for text, label in zip(point_labels, labels):
        assert text["content"].startswith(label[:10])
    assert not overlap(text_box(point_labels[0], svg), text_box(point_labels[1], svg)), (
        f"the labels {[t['content'] for t in point_labels]} overlap")
    return svg


@pytest.mark.parametrize("parent, int8", CASES.values(), ids=list(CASES))
def test_chart_texts_lie_inside_the_view_and_both_axes_are_named(parent, int8):
    svg = check_chart(demo._chart(bench(*parent), bench(*int8)))
    contents = " | ".join(t["content"] for t in svg.texts)
    for fps, latency in (parent, int8):
        assert f"{fps:.1f} FPS" in contents
    assert len(svg.circles) == 2
    left, top, right, bottom = bounds(svg)
    for circle in svg.circles:
        assert left <= float(circle["cx"]) <= right and top <= float(circle["cy"]) <= bottom


def test_chart_labels_the_reported_point_in_full():
    svg = check_chart(demo._chart(bench(136.7, 14.2), bench(402.3, 4.9)))
    contents = [t["content"] for t in svg.texts]
    assert "parent: 136.7 FPS, 14.2 ms" in contents
    assert "INT8: 402.3 FPS, 4.90 ms" in contents


@pytest.mark.parametrize("parent, int8", [((57.5, 250.0), (1234.5, 0.8)), ((136.7, 14.2), (402.3, 4.9)),
                                          ((100.0, 10.0), (101.0, 10.1))])
def test_chart_with_long_project_names_stays_inside(parent, int8):
    names = ("yolov4 with a very long project name on CPU " * 3, "yolov4 INT8 child, also quite a long name")
    check_chart(demo._chart(bench(*parent), bench(*int8), labels=names), labels=names)


def report_page(rows=(), class_rows=None, optimization: quantizer_pb2.QuantizationResult | None = None) -> str:
    comparison = gateway_pb2.CompareProjectsResponse(throughput_ratio=2.94, latency_ratio=0.35)
    comparison.first.last_benchmark.CopyFrom(bench(136.7, 14.2))
    comparison.second.last_benchmark.CopyFrom(bench(402.3, 4.9))
    report = gateway_pb2.Report()
    report.result.comparison.images = 1
    extra = {} if class_rows is None else {"class_rows": class_rows}
    child = gateway_pb2.Project(name="yolov4 INT8")
    if optimization is not None:
        child.optimization.result.CopyFrom(optimization)
    return demo._html(gateway_pb2.Project(name="yolov4 on CPU"), child, comparison, report, list(rows), [], False,
                      **extra)


def table_rows(page: str) -> list[list[str]]:
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page, re.S)]


CLASS_ROWS = [
    accuracy_pb2.ComparisonRow(image="street.jpg", image_id=1, class_name="dog", a=0, b=2, matches=0, precision=0.0),
    accuracy_pb2.ComparisonRow(image="street.jpg", image_id=1, class_name="car", a=4, b=3, matches=3,
                               precision=0.75, has_precision=True),
    accuracy_pb2.ComparisonRow(image="street.jpg", image_id=1, class_name="bus", a=2, b=0, matches=0, precision=0.0,
                               has_precision=True),
]


def precision_by_class(page: str) -> dict[str, str]:
    return {cells[1]: cells[-1] for cells in table_rows(page) if len(cells) >= 6 and cells[1] in ("dog", "car", "bus")}


def test_per_class_precision_is_a_dash_where_a_is_zero():
    page = report_page(rows=[accuracy_pb2.ComparisonRow(image="street.jpg", image_id=1, a=6, b=5, matches=3)],
                       class_rows=CLASS_ROWS)
    assert precision_by_class(page) == {"dog": "-", "car": "0.75", "bus": "0.00"}
    # the per-image table keeps its four columns, with no precision
    assert ["street.jpg", "6", "5", "3"] in table_rows(page)


def test_per_class_rows_given_as_the_rows_show_class_and_precision():
    """The one table that prints comparison rows shows the advanced mode's class and precision when it gets them."""
    page = report_page(rows=CLASS_ROWS)
    assert precision_by_class(page) == {"dog": "-", "car": "0.75", "bus": "0.00"}


def test_report_chart_is_inline_svg_without_script():
    page = report_page(class_rows=CLASS_ROWS)
    assert "<script" not in page and "http" not in page.split("<svg", 1)[1].split("</svg>", 1)[0].replace(
        "http://www.w3.org/2000/svg", "")
    check_chart(page)


def optimized(after: float, within: bool, **drop) -> quantizer_pb2.QuantizationResult:
    return quantizer_pb2.QuantizationResult(
        metric_name="parent_agreement", metric_before=1.0, metric_after=after, within_max_drop=within,
        warnings=[] if within else ["the INT8 model is 5.1 points below the parent: run AccuracyAware with max_drop "
                                    "0.01 (CLI: --accuracy-aware --max-drop 0.01)"],
        effective_config=quantizer_pb2.QuantizationConfig(max_drop=0.01, drop_type=quantizer_pb2.DROP_TYPE_ABSOLUTE),
        **drop)


def test_the_report_states_the_drop_against_the_parent_and_the_verdict():
    text = re.sub(r"<[^>]+>", "", report_page(optimization=optimized(0.949, False, accuracy_drop=0.051)))
    assert ("Accuracy drop against the parent: 5.1 points (parent_agreement 1.0000 → 0.9490), beyond the maximum "
            "drop of 1.0 points (max_drop 0.01)." in text)
    assert "run AccuracyAware with max_drop 0.01 (CLI: --accuracy-aware --max-drop 0.01)" in text
    within = re.sub(r"<[^>]+>", "", report_page(optimization=optimized(0.995, True, accuracy_drop=0.005)))
    assert "0.5 points (parent_agreement 1.0000 → 0.9950), within the maximum drop of 1.0 points" in within
    assert "Accuracy drop" not in report_page(optimization=optimized(0.0, True))  # nothing measured


def test_the_summary_states_the_drop_and_the_verdict(tmp_path):
    comparison = gateway_pb2.CompareProjectsResponse()
    child = gateway_pb2.Project(optimization=gateway_pb2.Optimization(result=optimized(0.949, False,
                                                                                       accuracy_drop=0.051)))
    result = demo.DemoResult(gateway_pb2.Project(id="prj-1"), child, comparison, gateway_pb2.Report(), [],
                             tmp_path / "r.html")
    assert result.summary()["within_max_drop"] is False and result.summary()["accuracy_drop"] == 0.051
    assert "accuracy drop against the parent 0.0510 (absolute), BEYOND max_drop 0.01" in demo.summary_text(result)
    # and the next step, as a command
    assert "to stay within it: workbench optimize prj-1 --accuracy-aware --max-drop 0.01, or keep the most " \
           "sensitive layers in floating point (--ignore PATTERN)" in demo.summary_text(result)
    within = demo.DemoResult(gateway_pb2.Project(id="prj-1"), gateway_pb2.Project(optimization=gateway_pb2.Optimization(
        result=optimized(0.995, True, accuracy_drop=0.005))), comparison, gateway_pb2.Report(), [], tmp_path / "r.html")
    assert "within max_drop 0.01" in demo.summary_text(within) and "to stay within" not in demo.summary_text(within)
