"""The reliability report: faults injected and survived, load, hostile input, security checks, objects lost.

Runs the fault (among them the replica faults: two gateways on one PostgreSQL), security and
hostile-input suites (real processes and real storage, see tests/faults, tests/security,
tests/hostile) and bench/load.py, and sums them up. Every figure comes from those runs:
a fault counts as survived when its test passed (the job failed naming the service, nothing was lost,
and the retry worked); objects lost is what the fault suite saw published and then found missing.

    .venv/bin/python bench/reliability.py [--clients 50] [--requests 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REPO, emit  # noqa: E402

SUITES = {"faults": "tests/faults", "security": "tests/security", "hostile_inputs": "tests/hostile"}
LEDGER = "test_no_object_published_during_the_faults_was_lost"  # a check after the faults, not one of them
HOSTILE_FILE = "test_hostile_file["  # one case per corpus file; the suite's other tests check the checks
REPLICAS = "test_replicas"  # two gateways on one PostgreSQL: one killed, a raced request_id, the database down


def run_suite(path: str, out: Path) -> dict:
    junit = out / f"{Path(path).name}.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path, f"--junitxml={junit}"],
                   cwd=REPO, env={**os.environ, "WORKBENCH_RELIABILITY_OUT": str(out)}, check=False)
    cases = ET.parse(junit).getroot().iter("testcase")
    outcome = {"tried": 0, "handled": 0, "files": 0, "files_handled": 0, "replica_faults": 0,
               "replica_faults_survived": 0, "failed": []}
    for case in cases:
        name = case.get("name")
        if name == LEDGER:
            continue  # its verdict is objects_lost
        passed = case.find("failure") is None and case.find("error") is None and case.find("skipped") is None
        outcome["tried"] += 1
        outcome["handled"] += passed
        if (case.get("classname") or "").endswith(REPLICAS):
            outcome["replica_faults"] += 1
            outcome["replica_faults_survived"] += passed
        if name.startswith(HOSTILE_FILE):
            outcome["files"] += 1
            outcome["files_handled"] += passed
        if not passed:
            outcome["failed"].append(name)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        out = Path(tmp)
        figures = {name: run_suite(path, out) for name, path in SUITES.items()}
        objects = json.loads((out / "objects.json").read_text()) if (out / "objects.json").exists() else None
    load = subprocess.run([sys.executable, "bench/load.py", "--clients", str(args.clients),
                           "--requests", str(args.requests)], cwd=REPO, capture_output=True, text=True)
    load_figures = json.loads(load.stdout.strip().splitlines()[-1]) if load.returncode == 0 else {
        "error": load.stderr[-2000:]}
    emit({
        "faults_injected": figures["faults"]["tried"],
        "faults_survived": figures["faults"]["handled"],
        "replica_faults": figures["faults"]["replica_faults"],
        "replica_faults_survived": figures["faults"]["replica_faults_survived"],
        "hostile_files_tried": figures["hostile_inputs"]["files"],
        "hostile_files_handled": figures["hostile_inputs"]["files_handled"],
        "hostile_suite_tests": figures["hostile_inputs"]["tried"],
        "security_checks": figures["security"]["tried"],
        "security_checks_passed": figures["security"]["handled"],
        "failed": {name: f["failed"] for name, f in figures.items() if f["failed"]},
        "objects_checked": objects["objects_checked"] if objects else None,
        "objects_lost": len(objects["objects_lost"]) if objects else None,
        "load": {key: load_figures.get(key) for key in ("clients", "requests", "requests_per_s", "latency_ms",
                                                         "by_code", "unexpected_errors", "concurrent_benchmark")}
        if "error" not in load_figures else load_figures,
        "targets": {"objects_lost": 0, "load.unexpected_errors": "none", "failed": "none"},
    })


if __name__ == "__main__":
    main()
