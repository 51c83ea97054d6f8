"""The figures the catalog holds for a project, each with its provenance: "which inputs and settings
made this number"."""

from __future__ import annotations

from services.gateway.projects import Catalog
from services.gateway.reports import Reports
from workbench.v1 import gateway_pb2, quantizer_pb2


def project_figures(catalog: Catalog, reports: Reports, project_id: str) -> list[gateway_pb2.Figure]:
    project = catalog.projects.get(project_id, "project_id")
    figures: list[gateway_pb2.Figure] = []

    def add(name: str, value: float, unit: str, provenance) -> None:
        figures.append(gateway_pb2.Figure(name=name, value=value, unit=unit, provenance=provenance))

    if project.HasField("last_benchmark"):
        bench = project.last_benchmark
        add("benchmark.throughput_fps", bench.throughput_fps, "FPS", bench.provenance)
        add("benchmark.latency.median_ms", bench.latency.median_ms, "ms", bench.provenance)
    if project.HasField("last_sweep") and project.last_sweep.points:
        sweep = project.last_sweep
        best = sweep.points[sweep.best_index].result
        add("sweep.best.throughput_fps", best.throughput_fps, "FPS", sweep.provenance)
    if project.HasField("optimization"):
        result = project.optimization.result
        add(f"optimization.{result.metric_name or 'metric'}_before", result.metric_before, "", result.provenance)
        add(f"optimization.{result.metric_name or 'metric'}_after", result.metric_after, "", result.provenance)
        if result.HasField("accuracy_drop"):  # before - after, in the unit of the bound it is judged against
            unit = "relative" if result.effective_config.drop_type == quantizer_pb2.DROP_TYPE_RELATIVE else "absolute"
            add("optimization.accuracy_drop", result.accuracy_drop, unit, result.provenance)
            add("optimization.max_drop", result.effective_config.max_drop, unit, result.provenance)
        for candidate in result.candidates:
            add(f"optimization.candidate[{candidate.description}].metric", candidate.metric, "", result.provenance)
            add(f"optimization.candidate[{candidate.description}].throughput_fps", candidate.throughput_fps, "FPS",
                result.provenance)
    report = reports.latest(project.id)
    if report is not None:
        result = report.result
        if result.HasField("metrics"):
            add("report.map", result.metrics.ap, "", result.provenance)
            add("report.map50", result.metrics.ap50, "", result.provenance)
        if result.HasField("comparison"):
            add("report.comparison.f1", result.comparison.f1, "", result.provenance)
            add("report.comparison.parent_agreement", result.comparison.parent_agreement, "", result.provenance)
    return figures
