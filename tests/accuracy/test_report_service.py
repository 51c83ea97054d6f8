"""Accuracy reports through the gateway: the parent-vs-INT8 comparison, its rows and pictures."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.conftest import FRAMES
from tests.small_models import small_classifier
from workbench import cli
from workbench.client import JobFailedError
from workbench.v1 import common_pb2, quantizer_pb2


def test_child_report_compares_with_the_parent(workbench, parent, capsys):
    client = workbench.client
    child_id = client.wait_job(client.optimize_project(parent.id, quantizer_pb2.QuantizationConfig(
        preset=quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE)).id).output.project_id
    report = client.get_report(client.wait_job(client.evaluate_project(child_id).id).output.report_id)
    summary = report.result.comparison
    assert report.parent_id == parent.id and summary.images == len(FRAMES)
    assert summary.total_b > 0 and 0 < summary.matches <= min(summary.total_a, summary.total_b)
    assert summary.f1 == pytest.approx(2 * summary.matches / (summary.total_a + summary.total_b))
    assert 0.5 < summary.parent_agreement <= 1.0
    assert [r.project_id for r in client.list_reports(parent.id)] == [parent.id]  # evaluated on the way
    made = report.result.provenance
    assert made.service == "accuracy" and made.inputs["parent_predictions"] == report.parent_predictions
    figures = {f.name: f for f in client.project_provenance(child_id)}
    assert figures["report.comparison.parent_agreement"].value == summary.parent_agreement
    assert figures["report.comparison.parent_agreement"].provenance == made

    rows = list(client.report_rows(report.id, order_by="-b"))
    assert len(rows) == len(FRAMES) and [r.b for r in rows] == sorted((r.b for r in rows), reverse=True)
    assert sum(r.matches for r in rows) == summary.matches
    differing = list(client.report_rows(report.id, only_differences=True))
    assert all(r.a != r.b or r.matches < min(r.a, r.b) for r in differing)
    per_class = list(client.report_rows(report.id, advanced=True))
    assert per_class and all(r.class_name for r in per_class)
    assert all(r.precision == pytest.approx(r.matches / r.a) for r in per_class if r.a)
    assert all(r.has_precision == (r.a > 0) for r in per_class)  # matches / A is undefined where A = 0

    # the README's command lines, run as written
    address = workbench.servers["gateway"].address
    capsys.readouterr()  # what the fixtures printed
    assert cli.main(["--address", address, "--json", "report", "show", report.id, "--differences",
                     "--order-by", "b", "--descending"]) == 0
    shown = [row.get("b", 0) for row in json.loads(capsys.readouterr().out)["rows"]]
    assert shown and shown == sorted(shown, reverse=True)
    assert cli.main(["--address", address, "report", "show", report.id, "--advanced"]) == 0
    table = capsys.readouterr().out.splitlines()
    for row in per_class:  # the PRECISION column: "-" where A = 0
        line = next(t for t in table if t.split()[:3] == [row.image, str(row.image_id), row.class_name])
        assert line.split()[-1] == (f"{row.precision:.2f}" if row.a else "-")

    png = client.report_image(report.id, rows[0].image_id)
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[1] >= 576


def test_a_classification_model_is_refused(workbench, tmp_path):
    client = workbench.client
    small_classifier(tmp_path / "classifier.onnx")
    model = client.wait_job(client.import_model(
        "classifier", {common_pb2.MODEL_FILE_ROLE_MODEL: tmp_path / "classifier.onnx"}).id).output.model_id
    dataset = client.wait_job(client.import_dataset("frames", FRAMES[:2]).id).output.dataset_id
    project = client.create_project("classifier", model_id=model, dataset_id=dataset)
    with pytest.raises(JobFailedError) as err:
        client.wait_job(client.evaluate_project(project.id).id)
    assert err.value.job.failed_service == "accuracy" and "classification" in err.value.job.error
