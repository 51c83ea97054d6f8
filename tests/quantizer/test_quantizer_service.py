"""INT8 optimization through the gateway and the quantizer: the real yolov4-tiny on the vtest frames."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from workbench.client import JobFailedError, WorkbenchError
from services.quantizer.calibrate import candidate_settings
from services.quantizer.servicer import config_from_pb
from workbench.v1 import common_pb2, quantizer_pb2

DATA = Path(__file__).resolve().parents[2] / "data"
PHOTOS = sorted((DATA / "images").glob("*.jpg"))


def test_default_method_makes_a_child_project_judged_against_the_parent(workbench, parent):
    client = workbench.client
    events = []
    job = client.optimize_project(parent.id, quantizer_pb2.QuantizationConfig(
        preset=quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE))
    done = client.wait_job(job.id, on_event=events.append)
    child = client.get_project(done.output.project_id)
    assert child.parent_id == parent.id and child.dataset_id == parent.dataset_id and child.device == parent.device
    result = child.optimization.result
    assert result.metric_name == "parent_agreement" and result.metric_before == 1.0
    assert 0.8 <= result.metric_after <= 1.0
    assert result.calibration_images == 8 and any("calibration images" in w for w in result.warnings)
    assert not any("unlike" in w for w in result.warnings)  # alternate frames of one video
    assert result.effective_config.preset == quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE
    # the drop against the parent, judged against the Default method's bound (max_drop unset: 0.01, absolute)
    config = result.effective_config
    assert (config.method, config.max_drop, config.drop_type) == (
        quantizer_pb2.QUANTIZATION_METHOD_DEFAULT, 0.01, quantizer_pb2.DROP_TYPE_ABSOLUTE)
    assert config.subset_size == 8 and config.target_device == "ANY"
    assert result.HasField("accuracy_drop") and result.accuracy_drop == pytest.approx(1.0 - result.metric_after)
    assert result.within_max_drop == (result.accuracy_drop <= 0.01 + 1e-9)
    assert any("run AccuracyAware with max_drop 0.01" in w for w in result.warnings) != result.within_max_drop
    # one candidate per overflow handling the CPU asks for (one with VNNI, two on AVX2), one chosen
    expected = candidate_settings(config_from_pb(quantizer_pb2.QuantizationConfig(
        preset=quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE)))
    assert [c.description for c in result.candidates] == [s.describe() for s in expected]
    assert result.model.analysis.quantized and [c.chosen for c in result.candidates].count(True) == 1
    assert {"statistics", "candidate"} <= {e.progress.stage for e in events}
    assert [p.id for p in client.list_projects(parent_id=parent.id)] == [child.id]
    dataset = client.get_dataset(parent.dataset_id).artifact
    made = result.provenance
    assert made.job_id == job.id and made.service == "quantizer" and made.versions["nncf"]
    assert made.inputs["dataset.manifest"].sha256 == dataset.manifest.sha256
    assert made.inputs["model.xml"] == client.get_model(parent.model_id).artifact.xml
    assert made.config["preset"] == "QUANTIZATION_PRESET_PERFORMANCE"
    figures = {f.name: f.value for f in client.project_provenance(child.id)}
    assert figures["optimization.parent_agreement_after"] == result.metric_after
    assert figures["optimization.accuracy_drop"] == result.accuracy_drop and figures["optimization.max_drop"] == 0.01
    # an INT8 model is not quantized again
    with pytest.raises(WorkbenchError) as err:
        client.optimize_project(child.id)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "already quantized" in err.value.message


def test_a_separate_calibration_dataset_calibrates_and_is_checked_against_the_projects(workbench, parent):
    client = workbench.client
    photos = client.wait_job(client.import_dataset("photos", PHOTOS).id).output.dataset_id
    with pytest.raises(WorkbenchError) as err:
        client.optimize_project(parent.id, calibration_dataset_id="dst-0000000000000000000")
    assert err.value.code == grpc.StatusCode.NOT_FOUND and "dst-0000000000000000000" in err.value.message
    job = client.optimize_project(parent.id, quantizer_pb2.QuantizationConfig(
        preset=quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE), calibration_dataset_id=photos)
    result = client.get_project(client.wait_job(job.id).output.project_id).optimization.result
    assert result.calibration_images == len(PHOTOS)
    assert any("unlike the images the model is judged on" in w for w in result.warnings)


def test_cancel_leaves_no_child_project(workbench, parent):
    client = workbench.client
    job = client.optimize_project(parent.id)
    for event in client.watch_job(job.id):
        if event.progress.stage in ("statistics", "validate"):
            client.cancel_job(job.id)
            break
    with pytest.raises(JobFailedError) as err:
        client.wait_job(job.id)
    assert err.value.job.state == common_pb2.JOB_STATE_CANCELLED
    assert list(client.list_projects(parent_id=parent.id)) == []


def test_refusals(workbench, parent):
    client = workbench.client
    bare = client.create_project("no dataset", model_id=parent.model_id)
    with pytest.raises(WorkbenchError) as err:
        client.optimize_project(bare.id)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "dataset" in err.value.message
    with pytest.raises(WorkbenchError) as err:
        client.optimize_project(parent.id, quantizer_pb2.QuantizationConfig(subset_fraction=1.5))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.field == "config.subset_fraction"


def test_accuracy_aware_ends_within_the_bound(workbench, parent):
    client = workbench.client
    job = client.optimize_project(parent.id, quantizer_pb2.QuantizationConfig(
        method=quantizer_pb2.QUANTIZATION_METHOD_ACCURACY_AWARE, max_drop=0.05,
        drop_type=quantizer_pb2.DROP_TYPE_ABSOLUTE, overflow_fix=quantizer_pb2.OVERFLOW_FIX_ENABLE))  # 4 candidates on any CPU
    result = client.get_project(client.wait_job(job.id).output.project_id).optimization.result
    assert result.effective_config.method == quantizer_pb2.QUANTIZATION_METHOD_ACCURACY_AWARE
    assert result.candidates[-1].chosen and result.candidates[-1].description.startswith("accuracy control")
    # the automatic choice measured both presets with both bias corrections before accuracy control
    assert {c.description.split(",")[0] for c in result.candidates[:-1]} == {"performance preset", "mixed preset"}
    assert {"fast bias correction" in c.description for c in result.candidates[:-1]} == {True, False}
    assert result.metric_after >= result.metric_before - 0.05
    # judged by the same code as Default's: within its bound, so no advice
    assert result.effective_config.max_drop == 0.05 and result.within_max_drop
    assert result.accuracy_drop == pytest.approx(result.metric_before - result.metric_after)
    assert not any("max_drop" in w for w in result.warnings)
