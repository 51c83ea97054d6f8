"""What each page shows, gathered from the gateway: plain functions from a client to a template context.

They make the fewest gateway calls a page allows (one list call per kind of record, never one per row),
because a page's time is the gateway calls it makes plus a little rendering (bench/web.py measures it).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

from workbench import WorkbenchClient
from workbench.v1 import common_pb2, gateway_pb2

LIST_LIMIT = 100
REPORT_PAGE = 50
# the columns of a report table, in order, and which mode shows them
BASIC_COLUMNS = ("image", "a", "b", "matches")
ADVANCED_COLUMNS = ("image", "class_name", "a", "b", "matches", "precision")
JOB_KIND_NAMES = {common_pb2.JOB_KIND_VERIFY_UPLOAD: "upload", common_pb2.JOB_KIND_IMPORT_MODEL: "import model",
                  common_pb2.JOB_KIND_IMPORT_DATASET: "import dataset", common_pb2.JOB_KIND_OPTIMIZE: "optimize",
                  common_pb2.JOB_KIND_BENCHMARK: "benchmark", common_pb2.JOB_KIND_SWEEP: "explore configurations",
                  common_pb2.JOB_KIND_EVALUATE: "accuracy report", common_pb2.JOB_KIND_EXPORT_PACKAGE: "package"}
TERMINAL = (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED)


def _first(iterator, limit: int = LIST_LIMIT) -> list:
    return list(itertools.islice(iterator, limit))


def best_fps(project: gateway_pb2.Project) -> float:
    """The best throughput measured for the project: its last benchmark or any point of its last sweep."""
    return max([project.last_benchmark.throughput_fps] + [p.result.throughput_fps for p in project.last_sweep.points])


def latest_reports(client: WorkbenchClient) -> dict[str, gateway_pb2.Report]:
    """Each project's newest report, from one list call (newest first)."""
    latest: dict[str, gateway_pb2.Report] = {}
    for report in _first(client.list_reports(page_size=LIST_LIMIT * 2), LIST_LIMIT * 2):
        latest.setdefault(report.project_id, report)
    return latest


def start(client: WorkbenchClient) -> dict:
    projects = _first(client.list_projects(page_size=LIST_LIMIT))
    models = {m.id: m for m in _first(client.list_models(page_size=LIST_LIMIT))}
    datasets = {d.id: d for d in _first(client.list_datasets(page_size=LIST_LIMIT))}
    reports = latest_reports(client)
    names = {p.id: p.name for p in projects}
    rows = [dict(project=p, model=models.get(p.model_id), dataset=datasets.get(p.dataset_id),
                 parent_name=names.get(p.parent_id, p.parent_id), best_fps=best_fps(p), report=reports.get(p.id))
            for p in projects]
    return dict(rows=rows, models=list(models.values()), datasets=list(datasets.values()))


@dataclass
class LayerType:
    layer_type: str
    time_ms: float
    share: float
    precisions: list[str]


def layer_types(result: common_pb2.BenchmarkResult) -> list[LayerType]:
    """Time and execution precisions per layer type, slowest first (needs performance counters)."""
    time: dict[str, float] = defaultdict(float)
    precisions: dict[str, set] = defaultdict(set)
    for counter in result.layer_counters:
        time[counter.layer_type] += counter.real_time_ms
        if counter.exec_precision:
            precisions[counter.layer_type].add(counter.exec_precision)
    total = sum(time.values()) or 1.0
    return sorted((LayerType(t, ms, ms / total, sorted(precisions[t])) for t, ms in time.items()),
                  key=lambda row: -row.time_ms)


def project(client: WorkbenchClient, project_id: str) -> dict:
    project = client.get_project(project_id)
    model = client.get_model(project.model_id) if project.model_id else None
    dataset = client.get_dataset(project.dataset_id) if project.dataset_id else None
    parent = client.get_project(project.parent_id) if project.parent_id else None
    children = _first(client.list_projects(parent_id=project.id))
    jobs = _first(client.list_jobs(project_id=project.id, page_size=20), 20)
    reports = _first(client.list_reports(project_id=project.id, page_size=10), 10)
    packages = [j for j in jobs if j.kind == common_pb2.JOB_KIND_EXPORT_PACKAGE and j.output.package_id]
    sweep = project.last_sweep
    return dict(
        project=project, model=model, dataset=dataset, parent=parent, children=children, jobs=jobs,
        reports=reports, packages=packages, best_fps=best_fps(project),
        layers=layer_types(project.last_benchmark), sweep=sweep,
        datasets=_first(client.list_datasets(page_size=LIST_LIMIT)),
        candidates=project.optimization.result.candidates if project.parent_id else [],
    )


def compare(client: WorkbenchClient, first_id: str, second_id: str) -> dict:
    projects = _first(client.list_projects(page_size=LIST_LIMIT))
    comparison = client.compare_projects(first_id, second_id) if first_id and second_id else None
    return dict(projects=projects, comparison=comparison, first_id=first_id, second_id=second_id)


@dataclass
class ReportQuery:
    """A report table's view: its mode, sort, filter and page, read from (and written to) the URL."""
    advanced: bool = False
    order_by: str = ""
    only_differences: bool = False
    class_name: str = ""
    page_token: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        return ADVANCED_COLUMNS if self.advanced else BASIC_COLUMNS

    def params(self, **changes) -> dict:
        """URL parameters of this view with changes applied; a new sort or filter starts at page one."""
        values = dict(mode="advanced" if self.advanced else "basic", order_by=self.order_by,
                      differences="1" if self.only_differences else "", class_name=self.class_name,
                      page_token=self.page_token)
        if changes.keys() - {"page_token"}:
            values["page_token"] = ""
        values.update(changes)
        return {k: v for k, v in values.items() if v}

    def sort_order(self, column: str) -> str:
        """The order_by a click on column gives: ascending first, descending on a second click."""
        return f"-{column}" if self.order_by == column else column


def report(client: WorkbenchClient, report_id: str, query: ReportQuery) -> dict:
    report = client.get_report(report_id)
    rows, next_token, total = [], "", 0
    if report.result.HasField("comparison_rows"):
        response = client.report_rows_page(
            report_id, advanced=query.advanced, order_by=query.order_by, only_differences=query.only_differences,
            class_name=query.class_name, page_size=REPORT_PAGE, page_token=query.page_token)
        rows, next_token, total = list(response.rows), response.next_page_token, response.total_size
    project = client.get_project(report.project_id)
    return dict(report=report, project=project, rows=rows, next_token=next_token, total=total, query=query,
                classes=sorted(report.result.metrics.ap_per_class) or _model_labels(client, project))


def _model_labels(client: WorkbenchClient, project: gateway_pb2.Project) -> list[str]:
    model = client.get_model(project.model_id)
    labels = model.artifact.model_info.fields.get("labels")
    if labels is None:
        return []
    if labels.HasField("string_value"):
        return labels.string_value.split()
    return [v.string_value for v in labels.list_value.values]


def visualize(client: WorkbenchClient, report_id: str) -> dict:
    report = client.get_report(report_id)
    project = client.get_project(report.project_id)
    dataset = client.get_dataset(project.dataset_id)
    return dict(report=report, project=project, annotated=dataset.artifact.HasField("annotations"))


def job(client: WorkbenchClient, job_id: str) -> dict:
    return dict(job=client.get_job(job_id))


def result_link(job: common_pb2.Job) -> tuple[str, str] | None:
    """Where a finished job's result is shown: (path, label)."""
    out = job.output
    if out.package_id:
        return f"/packages/{out.package_id}/download", "Download the package"
    if out.report_id:
        return f"/reports/{out.report_id}", "Open the accuracy report"
    if job.kind == common_pb2.JOB_KIND_OPTIMIZE and out.project_id:
        return f"/projects/{out.project_id}", "Open the optimized project"
    if out.model_id:
        return f"/models/{out.model_id}", "Open the model"
    if out.dataset_id:
        return f"/datasets/{out.dataset_id}", "Open the dataset"
    if out.project_id or job.project_id:
        return f"/projects/{out.project_id or job.project_id}", "Open the project"
    return None
