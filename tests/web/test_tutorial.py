"""The DL Workbench tutorial, walked in a real browser as a person would, each screen checked against what
the gateway's API returns: import, optimize, the child project, compare, the accuracy report in Basic and
Advanced mode (sorted and filtered), Visualize, explore configurations, the package, a cancelled job."""

from __future__ import annotations

import hashlib
import re
import time

from playwright.sync_api import expect

from services.reference_models import yolov4_tiny
from tests.conftest import FRAMES
from tests.web.conftest import screenshot
from workbench.v1 import common_pb2

JOB_TIMEOUT_MS = 240_000


def follow_job(page) -> tuple[str, list[float]]:
    """On a job page: wait for the job to end well; returns its id and the progress values the bar showed."""
    job_id = re.search(r"/jobs/([^/?]+)", page.url).group(1)
    state, bar = page.locator("#job .state"), page.locator("#job progress")
    seen, deadline = [], time.monotonic() + JOB_TIMEOUT_MS / 1000
    while state.inner_text() in ("queued", "running") and time.monotonic() < deadline:
        seen.append(float(bar.evaluate("b => b.value")))
        time.sleep(0.05)
    expect(state).to_have_text("succeeded")
    seen.append(float(bar.evaluate("b => b.value")))
    return job_id, seen


def open_result(page, label: str) -> None:
    page.get_by_role("link", name=label).click()
    page.wait_for_load_state()


def image_loaded(page, selector: str) -> bool:
    locator = page.locator(selector)
    locator.wait_for()
    page.wait_for_function("s => { const i = document.querySelector(s); return i.complete && i.naturalWidth > 0 }",
                           arg=selector)
    return True


def test_the_tutorial_in_a_browser(console, workbench, page):
    api = workbench.client
    page.goto(console.url)
    screenshot(page, "01-start-empty")
    expect(page.locator("#projects")).to_contain_text("No projects yet")

    # -- import the model: Darknet cfg + weights + names, with an upload progress bar ------------------------
    tiny = yolov4_tiny()
    form = page.locator("#import-model")
    form.locator("input[name=name]").fill("yolov4-tiny")
    form.locator("select[name=framework]").select_option("darknet")
    expect(form.locator("input[name=xml]")).to_be_hidden()  # only the chosen framework's files are asked for
    form.locator("input[name=cfg]").set_input_files(tiny.cfg)
    form.locator("input[name=weights]").set_input_files(tiny.weights)
    form.locator("input[name=names]").set_input_files(tiny.names)
    form.locator("button").click()
    expect(form.locator(".upload-progress")).to_be_visible()
    page.wait_for_url("**/jobs/*")
    job_id, _ = follow_job(page)
    model = api.get_model(api.get_job(job_id).output.model_id)
    open_result(page, "Open the model")
    expect(page.locator("h1")).to_have_text("yolov4-tiny")
    expect(page.locator("dl.facts")).to_contain_text(f"{model.artifact.analysis.parameter_count:,}")
    expect(page.locator("table.compact")).to_contain_text(model.artifact.analysis.inputs[0].shape)
    screenshot(page, "02-model")

    # -- import the dataset: the frames as loose images ------------------------------------------------------
    page.goto(console.url)
    form = page.locator("#import-dataset")
    form.locator("input[name=name]").fill("pedestrians")
    form.locator("input[name=files]").set_input_files(FRAMES)
    form.locator("button").click()
    page.wait_for_url("**/jobs/*")
    job_id, _ = follow_job(page)
    dataset = api.get_dataset(api.get_job(job_id).output.dataset_id)
    open_result(page, "Open the dataset")
    expect(page.locator("dl.facts")).to_contain_text(f"{dataset.artifact.summary.image_count} (")
    assert dataset.artifact.summary.image_count == len(FRAMES)
    assert image_loaded(page, "#preview")
    screenshot(page, "03-dataset")

    # -- create the project and benchmark it ----------------------------------------------------------------
    page.goto(console.url)
    form = page.locator("#create-project")
    form.locator("input[name=name]").fill("tiny on pedestrians")
    form.locator("select[name=model_id]").select_option(model.id)
    form.locator("select[name=dataset_id]").select_option(dataset.id)
    form.locator("button").click()
    page.wait_for_url("**/projects/*")
    parent_id = page.url.rsplit("/", 1)[1]
    assert api.get_project(parent_id).model_id == model.id
    benchmark(page, duration="1")
    parent = api.get_project(parent_id)
    expect(page.locator("#throughput")).to_have_text(f"{parent.last_benchmark.throughput_fps:,.1f}")
    expect(page.locator("#layers")).to_be_visible()  # per-layer-type time and precision
    screenshot(page, "04-project")

    # -- optimize: INT8, the automatic choice among the presets; the bar moves to completion -----------------
    form = page.locator("#optimize")
    form.locator("input[name=subset_size]").fill(str(len(FRAMES)))
    form.locator("button").click()
    page.wait_for_url("**/jobs/*")
    job_id, progress = follow_job(page)
    assert any(0 < value < 1 for value in progress), f"the bar never showed progress: {progress[:20]}"
    assert len(set(progress)) >= 3 and progress[-1] == 1, "the bar moves (stage by stage) to completion"
    screenshot(page, "05-optimize-job")
    child = api.get_project(api.get_job(job_id).output.project_id)
    open_result(page, "Open the optimized project")
    expect(page.locator("h1")).to_contain_text("INT8")
    candidates = child.optimization.result.candidates
    assert len(candidates) >= 2
    expect(page.locator("#candidates tbody tr")).to_have_count(len(candidates))
    chosen = next(c for c in candidates if c.chosen)
    expect(page.locator("#candidates tr.chosen")).to_contain_text(chosen.description)
    benchmark(page, duration="1")
    screenshot(page, "06-child-project")

    # -- compare the child with its parent --------------------------------------------------------------------
    page.locator("#compare-parent").click()
    page.wait_for_url("**/compare?*")
    comparison = api.compare_projects(parent_id, child.id)
    expect(page.locator("#throughput-row .ratio")).to_have_text(f"×{comparison.throughput_ratio:,.2f}")
    expect(page.locator("#latency-row .ratio")).to_have_text(f"×{comparison.latency_ratio:,.2f}")
    expect(page.locator("#layer-types tbody tr")).to_have_count(len(comparison.layer_types))
    screenshot(page, "07-compare")

    # -- the accuracy report ---------------------------------------------------------------------------------
    page.goto(f"{console.url}/projects/{child.id}")
    page.locator("#evaluate button").click()
    page.wait_for_url("**/jobs/*")
    job_id, _ = follow_job(page)
    report = api.get_report(api.get_job(job_id).output.report_id)
    open_result(page, "Open the accuracy report")
    c = report.result.comparison
    for selector, value in (("#total-a", c.total_a), ("#total-b", c.total_b), ("#total-matches", c.matches),
                            ("#total-images", c.images)):
        expect(page.locator(selector)).to_have_text(str(value))
    expect(page.locator("#f1")).to_have_text(f"{c.f1:,.3f}")
    basic = list(api.report_rows(report.id))
    expect(page.locator("#rows tbody tr")).to_have_count(min(len(basic), 50))
    screenshot(page, "08-report-basic")

    page.locator("#mode-advanced").click()
    page.wait_for_url("**mode=advanced*")
    expect(page.locator("#rows thead")).to_contain_text("Predicted-class precision")
    unsorted = column(page, "Class")
    page.locator("#rows thead a.sort[data-column=a]").click()
    page.wait_for_url("**order_by=a*")
    api_sorted = list(api.report_rows(report.id, advanced=True, order_by="a", page_size=50))[:50]
    assert column(page, "A") == [str(r.a) for r in api_sorted]
    assert column(page, "Image") == [r.image for r in api_sorted]
    page.locator("#rows thead a.sort[data-column=a]").click()  # a second click sorts descending
    page.wait_for_url("**order_by=-a*")
    api_descending = list(api.report_rows(report.id, advanced=True, order_by="-a", page_size=50))[:50]
    shown = column(page, "A")
    assert shown == [str(r.a) for r in api_descending]
    assert shown != [str(r.a) for r in api_sorted] or len(set(shown)) == 1, "the order changed"
    assert unsorted  # there are rows to sort
    screenshot(page, "09-report-advanced-sorted")

    page.locator("#filters input[name=differences]").check()
    page.wait_for_url("**differences=1*")
    differing = list(api.report_rows(report.id, advanced=True, only_differences=True))
    expect(page.locator("#row-count")).to_have_text(f"{len(differing)} rows")
    screenshot(page, "10-report-differences")

    # -- Visualize a row: the picture with both box sets; each set can be hidden ----------------------------
    page.goto(f"{console.url}/reports/{report.id}?order_by=-b")  # the image with the most parent detections
    page.locator("#rows a.visualize").first.click()
    page.wait_for_url("**/images/*")
    assert image_loaded(page, "#picture")
    both = page.locator("#picture").get_attribute("src")
    page.locator("#box-sets input[name=first]").uncheck()
    expect(page.locator("#picture")).not_to_have_attribute("src", both)
    assert image_loaded(page, "#picture")
    page.locator("#box-sets input[name=first]").check()
    expect(page.locator("#picture")).to_have_attribute("src", both)
    assert image_loaded(page, "#picture")
    screenshot(page, "11-visualize")

    # -- explore inference configurations ---------------------------------------------------------------------
    page.goto(f"{console.url}/projects/{child.id}")
    explore(page, streams="1, 2", seconds="0.5")
    follow_job(page)
    open_result(page, "Open the project")
    sweep = api.get_project(child.id).last_sweep
    expect(page.locator("#sweep-points tbody tr")).to_have_count(len(sweep.points))
    expect(page.locator("#sweep-points tbody tr").nth(sweep.sweet_spot_index)).to_contain_text("sweet spot")
    assert image_loaded(page, "#sweep-chart")
    screenshot(page, "12-configurations")

    # -- the deployment package, downloaded whole -------------------------------------------------------------
    page.locator("#package button").click()
    page.wait_for_url("**/jobs/*")
    job_id, _ = follow_job(page)
    archive = api.get_package(api.get_job(job_id).output.package_id).archive
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the package").click()
    data = open(download.value.path(), "rb").read()
    assert len(data) == archive.size and hashlib.sha256(data).hexdigest() == archive.sha256

    # -- a job cancelled from its page ------------------------------------------------------------------------
    page.goto(f"{console.url}/projects/{child.id}")
    explore(page, streams="1, 2, 4", seconds="30")
    job_id = page.url.rsplit("/", 1)[1]
    page.locator("#job form.cancel button").click()
    page.wait_for_url(f"**/jobs/{job_id}")
    expect(page.locator("#job .state")).to_have_text("cancelled", timeout=60_000)
    assert api.get_job(job_id).state == common_pb2.JOB_STATE_CANCELLED

    # -- the start page lists both projects with what was measured ---------------------------------------------
    page.goto(console.url)
    row = page.locator(f"#projects tr[data-project='{child.id}']")
    measured = api.get_project(child.id)
    best = max([measured.last_benchmark.throughput_fps] + [p.result.throughput_fps for p in measured.last_sweep.points])
    expect(row.locator(".best-fps")).to_have_text(f"{best:,.1f}")
    expect(row.locator(".agreement")).to_have_text(f"{100 * c.parent_agreement:.1f} %")
    screenshot(page, "13-start")


def benchmark(page, duration: str) -> None:
    """Benchmark the project whose page is open, and come back to it when the job is done."""
    page.locator("#benchmark input[name=duration_seconds]").fill(duration)
    page.locator("#benchmark button").click()
    page.wait_for_url("**/jobs/*")
    follow_job(page)
    open_result(page, "Open the project")


def explore(page, streams: str, seconds: str) -> None:
    """Start exploring inference configurations from the project page; lands on the job's page."""
    form = page.locator("#sweep")
    form.locator("input[name=streams]").fill(streams)
    form.locator("input[name=duration_seconds]").fill(seconds)
    form.locator("button").click()
    page.wait_for_url("**/jobs/*")


def column(page, title: str) -> list[str]:
    """The cells of one column of the report table, by its header's title."""
    headers = [h.strip(" ▲▼") for h in page.locator("#rows thead th").all_inner_texts()]
    index = headers.index(title)
    return [row.locator("td").nth(index).inner_text() for row in page.locator("#rows tbody tr").all()]

