"""The quantizer's result as protobuf: the accuracy drop and its verdict reach QuantizationResult, and
effective_config holds only what the method used. A real small model and scripted judgements, no services."""

from __future__ import annotations

import pytest

from services.quantizer import calibrate
from services.quantizer.servicer import config_from_pb, result_to_pb
from tests.small_models import images, small_model
from workbench.v1 import common_pb2, quantizer_pb2 as q

REQUEST = q.QuantizationConfig(preset=q.QUANTIZATION_PRESET_PERFORMANCE, overflow_fix=q.OVERFLOW_FIX_DISABLE,
                               fast_bias_correction=True, subset_fraction=0.5)


def given(**changes) -> q.QuantizationConfig:
    request = q.QuantizationConfig()
    request.CopyFrom(REQUEST)
    for name, value in changes.items():
        setattr(request, name, value)
    return request


def result(tmp_path, request: q.QuantizationConfig, after: float | None, parent: float = 1.0) -> q.QuantizationResult:
    """The request through the servicer's translation, calibrate.quantize and back; after None: no metric."""
    validation = None if after is None else calibrate.Validation(
        "parent_agreement", lambda compiled: after, lambda candidate: 100.0, parent=parent)
    outcome = calibrate.quantize(small_model(tmp_path), images(4), config_from_pb(request), validation)
    return result_to_pb(outcome, common_pb2.ModelArtifact())


def test_a_default_result_beyond_the_bound_carries_the_drop_the_verdict_and_the_advice(tmp_path):
    r = result(tmp_path, REQUEST, 0.949)
    assert r.HasField("accuracy_drop") and r.accuracy_drop == pytest.approx(0.051) and not r.within_max_drop
    assert any("run AccuracyAware with max_drop 0.01" in w for w in r.warnings)
    c = r.effective_config
    # Default with max_drop unset: judged against 0.01, absolute; the fraction became the images calibrated on
    assert (c.method, c.max_drop, c.drop_type) == (q.QUANTIZATION_METHOD_DEFAULT, 0.01, q.DROP_TYPE_ABSOLUTE)
    assert c.WhichOneof("subset") == "subset_size" and c.subset_size == 2
    assert (c.preset, c.overflow_fix, c.fast_bias_correction) == (
        q.QUANTIZATION_PRESET_PERFORMANCE, q.OVERFLOW_FIX_DISABLE, True)
    assert c.target_device == "ANY" and c.model_type == "" and list(c.ignored_scope) == []


def test_a_given_relative_bound_for_default_is_the_one_judged_and_shown(tmp_path):
    request = given(max_drop=0.05, drop_type=q.DROP_TYPE_RELATIVE)
    r = result(tmp_path, request, 0.485, parent=0.5)
    assert r.accuracy_drop == pytest.approx(0.03) and r.within_max_drop
    assert not any("max_drop" in w for w in r.warnings)
    assert (r.effective_config.max_drop, r.effective_config.drop_type) == (0.05, q.DROP_TYPE_RELATIVE)


def test_without_a_metric_there_is_no_drop_and_no_bound(tmp_path):
    r = result(tmp_path, given(max_drop=0.05), None)
    assert not r.HasField("accuracy_drop") and not r.within_max_drop
    assert r.effective_config.max_drop == 0 and r.effective_config.drop_type == q.DROP_TYPE_UNSPECIFIED
