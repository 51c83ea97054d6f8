"""deploy/grafana/workbench.json reads the metrics the services expose: every PromQL expression names only
exposed series with their own labels, and every Workbench metric is on the dashboard. The check is a
function that returns what is wrong, also run on copies with a mistake planted."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.common.telemetry import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "workbench.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
METRIC = re.compile(r"\b(workbench_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(workbench_[a-z0-9_]+)\{([^}]*)\}")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
PROMETHEUS_LABELS = {"job", "instance"}  # added by the scrape, not by the service


def exposed() -> dict[str, set[str]]:
    """Sample name -> its labels, for every workbench_* family in the registry (the queue gauges as a scrape
    sees them while a gateway counts)."""
    stop = metrics.count_jobs_with(lambda: (0, 0))
    try:
        families = [f for f in REGISTRY.collect() if f.name.startswith("workbench_")]
    finally:
        stop()
    names: dict[str, set[str]] = {}
    for family in families:
        labels = set(getattr(REGISTRY._names_to_collectors.get(family.name + SUFFIXES[family.type][0]),
                             "_labelnames", ()))
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, rows' nested panels included."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], t["expr"]) for t in inner.get("targets", [])]
    return found


def dashboard_problems(dashboard: dict, series: dict[str, set[str]]) -> list[str]:
    problems = []
    shown = set()
    for title, expr in expressions(dashboard):
        names = set(METRIC.findall(expr))
        if not names:
            problems.append(f"{title}: {expr!r} reads no workbench metric")
        for name in sorted(names - set(series)):
            problems.append(f"{title}: {name} is not a metric the services expose")
        known = set().union(*(series.get(n, set()) for n in names)) | PROMETHEUS_LABELS
        for name, matchers in SELECTOR.findall(expr):
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*[=!~]", matchers):
                if label not in series.get(name, set()) | PROMETHEUS_LABELS:
                    problems.append(f"{title}: {name} has no label {label}")
        for grouping in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in grouping.split(","))):
                if label not in known:
                    problems.append(f"{title}: groups by {label}, which {sorted(names)} do not have")
        shown |= {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in names}
    families = {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in series}
    for family in sorted(families - shown):
        problems.append(f"{family} is exposed but on no panel")
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            problems += [f"variable {variable['name']}: {n} is not exposed"
                         for n in METRIC.findall(query["query"]) if n not in series]
    return problems


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_the_dashboard_reads_exactly_the_exposed_metrics():
    series = exposed()
    assert {"workbench_rpc_requests_total", "workbench_rpc_duration_seconds_bucket", "workbench_jobs_queued",
            "workbench_benchmark_fps"} <= set(series)
    assert dashboard_problems(load(), series) == []


def _expr(title: str, old: str, new: str):
    def plant(dashboard):
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if panel["title"] == title:
                    assert old in target["expr"], target["expr"]
                    target["expr"] = target["expr"].replace(old, new)
                    return
        raise AssertionError(title)
    return plant


def _drop_panel(title: str):
    return lambda dashboard: dashboard["panels"].remove(next(p for p in dashboard["panels"] if p["title"] == title))


PLANTED = {
    "misspelled-counter": (_expr("RPC rate by method", "workbench_rpc_requests_total", "workbench_rpc_request_total"),
                           "workbench_rpc_request_total is not a metric the services expose"),
    "counter-without-total": (_expr("Jobs finished by kind and state", "workbench_jobs_finished_total",
                                    "workbench_jobs_finished"), "workbench_jobs_finished is not a metric"),
    "unknown-label": (_expr("S3 requests by status", "by (operation, status)", "by (operation, bucket)"),
                      "groups by bucket"),
    "unknown-matcher": (_expr("RPC errors by code", 'code!="OK"', 'status!="OK"'),
                        "workbench_rpc_requests_total has no label status"),
    "no-metric": (_expr("Queue depth", "max(workbench_jobs_queued", "max(up"), "reads no workbench metric"),
    "fps-not-shown": (_drop_panel("Last benchmark FPS per project"),
                      "workbench_benchmark_fps is exposed but on no panel"),
}


@pytest.mark.parametrize("mistake", sorted(PLANTED))
def test_the_check_names_a_planted_mistake(mistake):
    plant, expected = PLANTED[mistake]
    series, dashboard = exposed(), load()
    broken = copy.deepcopy(dashboard)
    plant(broken)
    problems = dashboard_problems(broken, series)
    assert any(expected in p for p in problems), problems
