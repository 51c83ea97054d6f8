"""The Default method's candidate grid and the calibration-set check, on the real yolov4-tiny."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import cv2
import nncf
import numpy as np
import openvino as ov
import pytest

from services import reference_models
from workbench_runtime.errors import InvalidArgument
from workbench_runtime.preprocess import Preprocessing
from services.converter.darknet import convert_darknet
from services.quantizer import calibrate
from services.quantizer.calibrate import QuantizeConfig, Setting, calibrations, candidate_settings
from services.quantizer.similarity import UNLIKE_ABOVE, energy_coefficient, features, unlike_warning
from tests.small_models import images, small_model

REPO = Path(__file__).resolve().parents[2]
FRAMES = sorted((REPO / "data" / "vtest").glob("*.jpg"))
PHOTOS = sorted((REPO / "data" / "images").glob("*.jpg"))


def test_auto_measures_presets_and_bias_correction_with_the_isa_overflow_handling(monkeypatch):
    monkeypatch.setenv("WORKBENCH_CPU_ISA", "avx512_core_vnni")
    assert candidate_settings(QuantizeConfig()) == [
        Setting("performance", "disable", True), Setting("performance", "disable", False),
        Setting("mixed", "disable", True), Setting("mixed", "disable", False)]
    monkeypatch.setenv("WORKBENCH_CPU_ISA", "avx2")  # AVX2 only: u8 x s8 can saturate
    assert {s.overflow_fix for s in candidate_settings(QuantizeConfig())} == {"enable", "first_layer"}
    assert len(candidate_settings(QuantizeConfig())) == 8


def test_explicit_choices_narrow_the_grid(monkeypatch):
    monkeypatch.setenv("WORKBENCH_CPU_ISA", "avx512_core_vnni")
    assert candidate_settings(QuantizeConfig(preset="mixed")) == [Setting("mixed", "disable", True)]
    assert candidate_settings(QuantizeConfig(fast_bias_correction=False, overflow_fix="enable")) == [
        Setting("performance", "enable", False), Setting("mixed", "enable", False)]
    with pytest.raises(InvalidArgument) as err:
        candidate_settings(QuantizeConfig(preset="fastest"))
    assert err.value.field == "config.preset"


def test_energy_coefficient_separates_alike_from_disjoint_sets():
    rng = np.random.default_rng(0)
    same = energy_coefficient(rng.normal(size=(40, 8)), rng.normal(size=(40, 8)))
    shifted = energy_coefficient(rng.normal(size=(40, 8)), rng.normal(3.0, 1.0, size=(40, 8)))
    assert same < 0.05 < 0.5 < shifted <= 1.0
    assert energy_coefficient(np.ones((3, 2)), np.ones((3, 2))) == 0.0


@pytest.fixture(scope="module")
def tiny_tensors():
    files = reference_models.yolov4_tiny()
    model = convert_darknet(files.cfg, files.weights, names=files.names)
    preprocess = Preprocessing.from_model(model)
    frames = [preprocess(cv2.imread(str(p)))[0] for p in FRAMES[::2]]  # 40 frames
    photos = [preprocess(cv2.imread(str(p)))[0] for p in PHOTOS]
    return model, frames, photos


def test_unrelated_calibration_photos_are_flagged_and_alternate_frames_are_not(tiny_tensors):
    model, frames, photos = tiny_tensors
    assert unlike_warning(model, frames[0::2], frames[1::2]) is None
    warning = unlike_warning(model, photos, frames[1::2])
    assert warning and "unlike" in warning and f"> {UNLIKE_ABOVE}" in warning


def test_features_need_a_convolution(tiny_tensors):
    model, frames, _ = tiny_tensors
    assert features(model, frames[:3]).shape == (3, 512)  # the deepest 13x13 convolution of the backbone
    parameter = ov.opset13.parameter([1, 4], ov.Type.f32)
    assert features(ov.Model([ov.opset13.relu(parameter)], [parameter]), [np.zeros(4, np.float32)]) is None


def test_the_choice_is_the_fastest_within_the_bound_of_the_best_metric(monkeypatch, tmp_path):
    """Scripted judgements on a real small model: the rule, not the order candidates come in, decides."""
    monkeypatch.setenv("WORKBENCH_CPU_ISA", "avx512_core_vnni")
    model = small_model(tmp_path)
    # perf/fast, perf/full, mixed/fast, mixed/full; the parent's metric comes with the validation
    metrics = iter([0.962, 0.90, 0.958, 0.965])
    speeds = iter([300.0, 200.0])  # Performance's, Mixed's
    measured = []
    validation = calibrate.Validation("scripted", lambda compiled: next(metrics),
                                      lambda candidate: measured.append(candidate) or next(speeds), parent=1.0)
    outcome = calibrate.quantize(model, images(4), QuantizeConfig(), validation)
    # within 0.01 of the best (0.965): perf/fast, mixed/fast and mixed/full; 0.90 is out of reach, unmeasured.
    # The two Mixed ones differ only in their biases, so one speed: measured once, on the better metric
    assert [c.throughput_fps for c in outcome.candidates] == [300.0, 0.0, 0.0, 200.0] and len(measured) == 2
    assert [c.chosen for c in outcome.candidates] == [True, False, False, False]
    assert outcome.config.preset == "performance" and outcome.config.fast_bias_correction is True
    assert outcome.metric_before == 1.0 and outcome.metric_after == 0.962


def test_bias_correction_changes_biases_only(monkeypatch, tiny_tensors):
    """Why the choice measures one speed per preset and overflow fix: on yolov4-tiny, fast and full bias
    correction make the same operations with the same quantizer ranges; only bias values differ."""
    monkeypatch.setenv("WORKBENCH_CPU_ISA", "avx512_core_vnni")
    model, frames, _ = tiny_tensors
    config = QuantizeConfig()
    made = dict(calibrations(model, nncf.Dataset([f[None] for f in frames[:8]]), config, candidate_settings(config), 8))

    def operations(m: ov.Model) -> list:
        return [(op.get_type_name(), str(op.get_output_partial_shape(0)), str(op.get_output_element_type(0)))
                for op in m.get_ordered_ops()]

    def constants(m: ov.Model, kind: str) -> list[bytes]:  # the constants feeding every op of a kind
        return [op.input_value(i).get_node().get_data().tobytes() for op in m.get_ordered_ops()
                if op.get_type_name() == kind for i in range(op.get_input_size())
                if op.input_value(i).get_node().get_type_name() == "Constant"]

    for preset in calibrate.PRESETS:
        fast, full = (made[Setting(preset, "disable", bias)] for bias in (True, False))
        assert operations(fast) == operations(full)
        assert constants(fast, "FakeQuantize") == constants(full, "FakeQuantize")
        assert constants(fast, "Add") != constants(full, "Add")  # the biases: what full correction redoes


def test_of_two_settings_differing_in_bias_correction_only_the_better_metric_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CPU_ISA", "avx512_core_vnni")
    model = small_model(tmp_path)
    metrics = iter([0.95, 0.90, 0.958, 0.965])
    validation = calibrate.Validation("scripted", lambda compiled: next(metrics), lambda candidate: 100.0, parent=1.0)
    outcome = calibrate.quantize(model, images(4), QuantizeConfig(), validation)
    assert [c.chosen for c in outcome.candidates] == [False, False, False, True]
    assert [c.throughput_fps for c in outcome.candidates] == [0.0, 0.0, 0.0, 100.0]
    assert outcome.config.preset == "mixed" and outcome.config.fast_bias_correction is False


def ir(model: ov.Model, folder: Path) -> tuple[str, bytes]:
    """The serialized IR, less the numbers OpenVINO appends to generated node names (a process-wide counter:
    two nncf.quantize runs of one setting differ there too)."""
    folder.mkdir()
    ov.save_model(model, str(folder / "m.xml"), compress_to_fp16=False)
    xml = re.sub(r'name="([A-Za-z]+)_\d+"', r'name="\1_N"', (folder / "m.xml").read_text())
    return xml, (folder / "m.bin").read_bytes()


@pytest.mark.parametrize("isa", ["avx512_core_vnni", "avx2"])
def test_shared_statistics_make_every_candidate_exactly_as_its_own_nncf_run(monkeypatch, tmp_path, isa):
    monkeypatch.setenv("WORKBENCH_CPU_ISA", isa)
    model, config = small_model(tmp_path), QuantizeConfig()
    settings = candidate_settings(config)
    data = nncf.Dataset([image[None] for image in images(6)])
    made = {share: [(setting, ir(quantized, tmp_path / f"{share}-{i}")) for i, (setting, quantized)
                    in enumerate(calibrate.calibrations(model, data, config, settings, 6, share=share))]
            for share in (True, False)}
    assert [setting for setting, _ in made[True]] == settings
    assert made[True] == made[False]  # the same FakeQuantize ranges, INT8 weights, biases and rt_info
    assert "FakeQuantize" in made[True][0][1][0]
    # presets and overflow fixes make different weights and scales, so a mix-up between them would show (bias
    # correction changes nothing measurable on this model: the bench compares it on yolov4-tiny)
    assert len({weights for _, (_, weights) in made[True]}) == len({(s.preset, s.overflow_fix) for s in settings})


def test_the_choice_and_its_model_are_the_same_without_sharing(monkeypatch, tmp_path):
    """A real metric (the candidate's outputs against the parent's in f32), so the winner follows the models."""
    monkeypatch.setenv("WORKBENCH_CPU_ISA", "avx512_core_vnni")
    model, pictures = small_model(tmp_path), images(8)
    reference = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    expected = [reference(picture[None])[0] for picture in pictures]

    def closeness(compiled: ov.CompiledModel) -> float:
        return -float(np.mean([np.abs(compiled(p[None])[0] - e).mean() for p, e in zip(pictures, expected)]))

    def choose(share: bool):
        monkeypatch.setattr(calibrate, "calibrations", partial(calibrations, share=share))
        validation = calibrate.Validation("closeness", closeness, lambda candidate: 100.0, parent=0.0)
        return calibrate.quantize(model, pictures, QuantizeConfig(agreement_bound=0.0), validation)

    shared, alone = choose(True), choose(False)
    assert [(c.description, c.metric, c.chosen) for c in shared.candidates] == [
        (c.description, c.metric, c.chosen) for c in alone.candidates]
    assert ir(shared.model, tmp_path / "shared") == ir(alone.model, tmp_path / "alone")


@pytest.mark.parametrize("share", [True, False])
def test_a_scope_nncf_refuses_is_the_requests_fault_with_or_without_sharing(monkeypatch, tmp_path, share):
    model, config = small_model(tmp_path), QuantizeConfig(ignored_scope=("no such layer.*",))
    data = nncf.Dataset([image[None] for image in images(2)])
    with pytest.raises(InvalidArgument) as err:
        list(calibrations(model, data, config, candidate_settings(config), 2, share=share))
    assert err.value.field == "config" and "NNCF refused" in str(err.value)


# one setting, whatever the CPU: the drop and its verdict do not depend on the automatic choice
ONE_SETTING = dict(preset="performance", overflow_fix="disable", fast_bias_correction=True)


def judged(tmp_path: Path, after: float, parent: float = 1.0, **config) -> calibrate.Outcome:
    """The Default method on a real small model, its INT8 model scored `after` and the parent `parent`."""
    validation = calibrate.Validation("parent_agreement", lambda compiled: after, lambda candidate: 100.0,
                                      parent=parent)
    return calibrate.quantize(small_model(tmp_path), images(4), QuantizeConfig(**ONE_SETTING, **config), validation)


def drop_warnings(outcome: calibrate.Outcome) -> list[str]:
    return [w for w in outcome.warnings if "max_drop" in w]


def test_a_default_result_beyond_max_drop_says_so_and_what_to_run_next(tmp_path):
    """What was measured on AVX2: parent agreement 0.949 kept with nothing saying it is 5 points below the parent."""
    outcome = judged(tmp_path, 0.949)
    assert outcome.accuracy_drop == pytest.approx(0.051) and outcome.within_max_drop is False
    assert outcome.config.max_drop == 0.01 and outcome.config.drop_type == "absolute"  # the bound applied
    [warning] = drop_warnings(outcome)
    assert "5.1 points below the parent (parent_agreement 1.0000 -> 0.9490)" in warning
    assert "beyond the bound of 1.0 points (max_drop 0.01, absolute)" in warning
    assert "run AccuracyAware with max_drop 0.01 (CLI: --accuracy-aware --max-drop 0.01;" in warning
    assert "keep the most sensitive layers in floating point" in warning and "--ignore PATTERN" in warning
    # a given bound is the one judged and offered
    outcome = judged(tmp_path, 0.949, max_drop=0.03)
    assert outcome.within_max_drop is False and "--accuracy-aware --max-drop 0.03;" in drop_warnings(outcome)[0]


@pytest.mark.parametrize("after", [1.0, 0.995, 0.99, 1.02])
def test_a_default_result_within_max_drop_has_no_drop_warning(tmp_path, after):
    outcome = judged(tmp_path, after)
    assert outcome.accuracy_drop == pytest.approx(1.0 - after) and outcome.within_max_drop is True
    assert drop_warnings(outcome) == [] and not any("AccuracyAware" in w for w in outcome.warnings)


def test_a_relative_max_drop_judges_the_share_of_the_parents_metric(tmp_path):
    # COCO mAP 0.5 -> 0.485: 1.5 points (beyond an absolute 0.01) but 3 % of the parent's (within a relative 0.05)
    outcome = judged(tmp_path, 0.485, parent=0.5, max_drop=0.05, drop_type="relative")
    assert outcome.accuracy_drop == pytest.approx(0.03) and outcome.within_max_drop is True
    assert drop_warnings(outcome) == []
    assert judged(tmp_path, 0.485, parent=0.5).within_max_drop is False  # absolute 0.01
    outcome = judged(tmp_path, 0.45, parent=0.5, max_drop=0.05, drop_type="relative")
    assert outcome.accuracy_drop == pytest.approx(0.1) and outcome.within_max_drop is False
    [warning] = drop_warnings(outcome)
    assert "10.0 % below the parent" in warning and "(max_drop 0.05, relative)" in warning
    assert "--accuracy-aware --max-drop 0.05 --relative;" in warning


def test_accuracy_control_outside_its_bound_is_judged_by_the_same_code_with_its_own_advice(tmp_path):
    outcome = calibrate.Outcome(model=None, config=QuantizeConfig(method="accuracy_aware", max_drop=0.02),
                                metric_name="coco_map", metric_before=0.4, metric_after=0.35, fp_layers=["a", "b"])
    calibrate.judge_drop(outcome)
    assert outcome.accuracy_drop == pytest.approx(0.05) and outcome.within_max_drop is False
    [warning] = outcome.warnings
    assert warning.startswith("accuracy control stopped outside the bound: the INT8 model is 5.0 points below")
    assert "with 2 layers in floating point" in warning and "--ignore PATTERN" in warning
    assert "run AccuracyAware" not in warning


def test_the_effective_config_holds_only_what_the_method_used(tmp_path):
    outcome = judged(tmp_path, 0.99, subset_fraction=0.5, target_device="cpu", ignored_scope=())
    assert outcome.config == QuantizeConfig(**ONE_SETTING, subset_size=2, subset_fraction=0.0, target_device="CPU")
    # no metric for the model: nothing judged, so no bound in the effective config and no drop
    unjudged = calibrate.quantize(small_model(tmp_path), images(4), QuantizeConfig(**ONE_SETTING))
    assert unjudged.config.max_drop == 0.0 and unjudged.config.drop_type == ""
    assert unjudged.accuracy_drop is None and unjudged.within_max_drop is False
