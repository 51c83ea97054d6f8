"""The web console's pages against the gateway calls they make, on a real 10,000-row accuracy report.

Set-up (timings on stderr): SeaweedFS and the five services as real processes (as bench/flow.py starts
them); through the gateway: the real yolov4-tiny (its cfg copied with a smaller input, --size, so that
10,000 images evaluate in a minute or two: the weights do not depend on the input size), a dataset of
--images small JPEGs made from the 80 vtest frames (random crops, resizes, flips, brightness and quality, so
no two are alike) imported as one zip archive, a project, an INT8 child (optimize: Performance preset, a
small calibration subset), a 2 s benchmark of each with per-layer counters (the compare page
compares them) and EvaluateProject on the child (which evaluates the parent first): a report
whose Basic mode has one row per image.

Then the console (`python -m services.web`, its own process) over that gateway, and three pages, each
against the gateway calls it makes (services.web.pages called in this process through the SDK), the two
sides alternating (A B, then B A) over one persistent HTTP connection, as a browser keeps one:

- report page: GET /reports/{id}?order_by=-a&differences=1 (sorted and filtered), and its second page
  through the page token the first page links, vs pages.report(client, id, same query);
- project page (the child): GET /projects/{id} vs pages.project(client, id);
- compare page: GET /compare?first=parent&second=child vs pages.compare(client, parent, child).

Medians and p95 of each, the ratio of medians (target <= 1.5) and their difference (what the console adds),
the HTTP floor (GET /healthz on the same connection: uvicorn and Starlette, no gateway call), and the bytes
of a first load (status lines, headers and bodies of the HTML, /static/console.css and /static/console.js;
no images) of the start page and of the report page (target <= 500,000). Figures as one JSON object on the
last line of stdout; set-up timings on stderr (about 4 minutes on 2 cores, evaluation most of it).

    .venv/bin/python bench/web.py [--images 10000] [--samples 60] [--size 160] [--subset 64]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import html
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zipfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REPO, Steps, emit, free_port, seaweed, service_process  # noqa: E402
from services.reference_models import DATA, yolov4_tiny  # noqa: E402
from services.web import pages  # noqa: E402
from workbench.client import WorkbenchClient  # noqa: E402
from workbench.v1 import common_pb2, quantizer_pb2  # noqa: E402

FRAMES = sorted((DATA / "vtest").glob("*.jpg"))
OVER_GATEWAY_MAX = 1.5
FIRST_LOAD_BYTES_MAX = 500_000
REPORT_QUERY = dict(order_by="-a", differences="1")


def log(message: str) -> None:
    print(f"[bench/web] {message}", file=sys.stderr, flush=True)


# -- set-up ------------------------------------------------------------------------------------------


def make_archive(count: int, folder: Path, seed: int = 0) -> Path:
    """A zip of `count` small JPEGs, each a random crop of a vtest frame, resized (96..200 px wide),
    perhaps mirrored, brightness and JPEG quality varied."""
    rng = random.Random(seed)
    frames = [cv2.imread(str(p)) for p in FRAMES]
    archive = folder / f"frames{count}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for n in range(count):
            frame = frames[n % len(frames)]
            h, w = frame.shape[:2]
            cw = rng.randint(w // 3, w)
            ch = min(h, int(cw * rng.uniform(0.6, 0.9)))
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            image = frame[y:y + ch, x:x + cw]
            width = rng.randint(96, 200)
            image = cv2.resize(image, (width, max(32, round(width * ch / cw))), interpolation=cv2.INTER_AREA)
            if rng.random() < 0.5:
                image = image[:, ::-1]
            gain = rng.uniform(0.8, 1.2)
            image = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
            ok, blob = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(70, 95)])
            assert ok
            zf.writestr(f"img_{n:05d}.jpg", blob.tobytes())
    return archive


def small_cfg(cfg: Path, size: int, folder: Path) -> Path:
    """A copy of the Darknet cfg with width and height set to size (a multiple of 32)."""
    text = re.sub(r"(?m)^(width|height)\s*=\s*\d+", lambda m: f"{m.group(1)}={size}", cfg.read_text())
    copy = folder / f"{cfg.stem}-{size}.cfg"
    copy.write_text(text)
    return copy


def build_report(client: WorkbenchClient, images: int, size: int, subset: int, work: Path, steps: Steps
                 ) -> dict:
    files = yolov4_tiny()
    with steps.step("make_archive"):
        archive = make_archive(images, work)
    log(f"archive: {images} images, {archive.stat().st_size / 1e6:.1f} MB")
    with steps.step("import_model"):
        model = client.wait_job(client.import_darknet(
            "yolov4-tiny", small_cfg(files.cfg, size, work), files.weights, files.names).id).output.model_id
    with steps.step("import_dataset"):
        dataset = client.wait_job(client.import_dataset(f"frames{images}", [archive]).id).output.dataset_id
    project = client.create_project("yolov4-tiny on frames", model_id=model, dataset_id=dataset)
    with steps.step("optimize"):
        child = client.wait_job(client.optimize_project(project.id, quantizer_pb2.QuantizationConfig(
            preset=quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE, subset_size=subset)).id).output.project_id
    with steps.step("benchmark"):  # the compare page compares the two projects' benchmarks
        for project_id in (project.id, child):
            client.wait_job(client.benchmark_project(project_id, common_pb2.BenchmarkConfig(
                duration_seconds=2, performance_counters=True)).id)
    with steps.step("evaluate"):
        report_id = client.wait_job(client.evaluate_project(child).id).output.report_id
    rows = client.report_rows_page(report_id, page_size=1).total_size
    return dict(parent=project.id, child=child, report=report_id, rows=rows)


# -- the console ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def console(gateway: str, log_path: Path):
    """`python -m services.web` over the gateway on a free port (as tests/web/conftest.py starts it)."""
    port = free_port()
    env = {**os.environ, "WORKBENCH_WEB_LISTEN": f"127.0.0.1:{port}", "WORKBENCH_ADDRESS": gateway,
           "WORKBENCH_LOG_FORMAT": "text", "WORKBENCH_LOG_LEVEL": "WARNING"}
    env.pop("WORKBENCH_TOKEN", None)
    with log_path.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.web"], env=env, cwd=REPO, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    connection.close()
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the console did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield process, port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


class Browser:
    """One persistent HTTP/1.1 connection with a cookie jar, asking for HTML like a browser."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, path: str) -> tuple[bytes, int]:
        """The body and the bytes on the wire (status line, headers, body) of a 200 response."""
        headers = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.connection.request("GET", path, headers=headers)
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
        for value in response.headers.get_all("set-cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        head = len(f"HTTP/1.1 {response.status} {response.reason}\r\n") + sum(
            len(f"{k}: {v}\r\n") for k, v in response.headers.items()) + 2
        return body, head + len(body)

    def close(self) -> None:
        self.connection.close()


def first_load(port: int, path: str) -> dict:
    """A new browser's first load of a page: the HTML, then the stylesheet and script it links (no images)."""
    browser = Browser(port)
    try:
        page, page_wire = browser.get(path)
        text = page.decode()
        assets = sorted(set(re.findall(r'(?:href|src)="(/static/[^"?#]+)', text)))
        sizes = {"html": len(page)}
        wire = page_wire
        for asset in assets:
            body, on_wire = browser.get(asset)
            sizes[asset.rsplit("/", 1)[-1]] = len(body)
            wire += on_wire
        return dict(body_bytes=sum(sizes.values()), wire_bytes=wire, parts=sizes)
    finally:
        browser.close()


# -- timing --------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def measure(pairs: dict[str, tuple], samples: int, warmup: int = 3) -> dict[str, dict[str, list[float]]]:
    """pairs: name -> (page side, gateway side), callables. Every round runs each pair's two sides back to
    back, A then B on even rounds and B then A on odd ones, and the pairs in turn, so drift hits all alike.
    A pair whose gateway side is None times its page side only."""
    times = {name: {"page": [], "gateway": []} for name in pairs}
    for round_ in range(warmup + samples):
        for name, (page, gateway) in pairs.items():
            sides = [("page", page), ("gateway", gateway)] if gateway else [("page", page)]
            if round_ % 2:
                sides.reverse()
            for side, call in sides:
                start = time.perf_counter()
                call()
                elapsed = (time.perf_counter() - start) * 1000
                if round_ >= warmup:
                    times[name][side].append(elapsed)
    return times


def next_page_path(report_html: bytes) -> str | None:
    found = re.search(rb'id="next-page" href="([^"]+)"', report_html)
    return html.unescape(found.group(1).decode()) if found else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--size", type=int, default=160, help="the model's input width and height")
    parser.add_argument("--subset", type=int, default=64, help="calibration images")
    args = parser.parse_args()
    started = time.perf_counter()
    steps = Steps(log)
    yolov4_tiny()  # fetch the weights before timing
    with seaweed() as (_, settings), contextlib.ExitStack() as stack, \
            tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        work = Path(tmp)
        with steps.step("start_services"):
            addresses = {}
            for name in ("converter", "quantizer", "benchmark", "accuracy"):
                _, addresses[name] = stack.enter_context(service_process(name, settings))
            settings = settings.__class__(**{**vars(settings), **{f"{k}_addr": v for k, v in addresses.items()}})
            _, gateway = stack.enter_context(service_process("gateway", settings))
        client = stack.enter_context(WorkbenchClient(gateway, timeout=600))
        ids = build_report(client, args.images, args.size, args.subset, work, steps)
        log(f"report {ids['report']}: {ids['rows']} rows (parent {ids['parent']}, child {ids['child']})")
        setup_s = round(time.perf_counter() - started, 1)

        with steps.step("start_console"):
            _, port = stack.enter_context(console(gateway, work / "web.log"))
        browser = Browser(port)
        stack.callback(browser.close)
        report_path = f"/reports/{ids['report']}?{urllib.parse.urlencode(REPORT_QUERY)}"
        query = pages.ReportQuery(order_by="-a", only_differences=True)
        first_html, _ = browser.get(report_path)
        page2_path = next_page_path(first_html)
        pairs = {
            "report": (lambda: browser.get(report_path), lambda: pages.report(client, ids["report"], query)),
            "project": (lambda: browser.get(f"/projects/{ids['child']}"), lambda: pages.project(client, ids["child"])),
            "compare": (lambda: browser.get(f"/compare?first={ids['parent']}&second={ids['child']}"),
                        lambda: pages.compare(client, ids["parent"], ids["child"])),
        }
        if page2_path:
            token = urllib.parse.parse_qs(urllib.parse.urlsplit(page2_path).query)["page_token"][0]
            query2 = pages.ReportQuery(order_by="-a", only_differences=True, page_token=token)
            pairs["report_page2"] = (lambda: browser.get(f"/reports/{ids['report']}{page2_path}"),
                                     lambda: pages.report(client, ids["report"], query2))
        else:
            log("the report's first page links no second page: report_page2 not measured")
        # the floor of any page: an HTTP round trip through uvicorn and Starlette that calls no gateway
        pairs["http_floor"] = (lambda: browser.get("/healthz"), None)
        with steps.step("measure"):
            times = measure(pairs, args.samples)
        start_load = first_load(port, "/")
        report_load = first_load(port, report_path)

    figures: dict = {
        "model": f"yolov4-tiny (real weights), {args.size}x{args.size} input",
        "report_rows": ids["rows"], "images": args.images, "samples": args.samples,
        "differing_rows": shown_rows(first_html),
    }
    ratios = []
    floor = times.pop("http_floor")["page"]
    figures["http_floor_p50_ms"] = round(percentile(floor, 50), 3)
    figures["http_floor_p95_ms"] = round(percentile(floor, 95), 3)
    for name, sides in times.items():
        page_p50, gateway_p50 = percentile(sides["page"], 50), percentile(sides["gateway"], 50)
        figures[f"{name}_page_p50_ms"] = round(page_p50, 2)
        figures[f"{name}_page_p95_ms"] = round(percentile(sides["page"], 95), 2)
        figures[f"{name}_gateway_p50_ms"] = round(gateway_p50, 2)
        figures[f"{name}_gateway_p95_ms"] = round(percentile(sides["gateway"], 95), 2)
        figures[f"{name}_over_gateway"] = round(page_p50 / gateway_p50, 3)
        figures[f"{name}_console_ms"] = round(page_p50 - gateway_p50, 2)  # what the console adds
        ratios.append(page_p50 / gateway_p50)
    # bytes on the wire (status lines, headers and uncompressed bodies) of HTML + console.css + console.js
    figures["start_first_load_bytes"] = start_load["wire_bytes"]
    figures["report_first_load_bytes"] = report_load["wire_bytes"]
    figures["first_load_bytes"] = {"start": start_load, "report": report_load}
    figures["setup_s"] = steps.seconds
    figures["setup_total_s"] = setup_s
    figures["targets"] = {"over_gateway_max": OVER_GATEWAY_MAX, "first_load_bytes_max": FIRST_LOAD_BYTES_MAX}
    figures["targets_met"] = bool(
        all(r <= OVER_GATEWAY_MAX for r in ratios)
        and max(figures["start_first_load_bytes"], figures["report_first_load_bytes"]) <= FIRST_LOAD_BYTES_MAX)
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    emit(figures)


def shown_rows(report_html: bytes) -> int | None:
    found = re.search(rb'id="row-count">(\d+) rows', report_html)
    return int(found.group(1)) if found else None


if __name__ == "__main__":
    main()
