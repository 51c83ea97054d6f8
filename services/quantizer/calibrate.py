"""INT8 post-training quantization with NNCF: the Default method with a measured automatic choice,
and AccuracyAware started from the best Default configuration.

The calibration tensors come from workbench_runtime.preprocess, the same preprocessing the model is
evaluated with. `Validation` is how a candidate is judged: a metric (COCO mAP, or agreement with
the parent's predictions) and a throughput measurement.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import nncf
import numpy as np
import openvino as ov
from nncf.common.factory import StatisticsAggregatorFactory, build_graph
from nncf.openvino.graph.model_utils import remove_friendly_name_duplicates
from nncf.openvino.graph.nncf_graph_builder import GraphConverter
from nncf.openvino.graph.node_utils import get_number_if_op
from nncf.openvino.quantization.backend_parameters import is_weight_compression_needed
from nncf.openvino.rt_info import dump_parameters
from nncf.parameters import DropType, ModelType, TargetDevice
from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, OverflowFix,
                                                   convert_to_dict_recursively)
from nncf.quantization.algorithms.min_max.algorithm import MinMaxQuantization
from nncf.quantization.algorithms.post_training.pipeline import create_ptq_pipeline
from openvino._offline_transformations import compress_quantize_weights_transformation

from workbench_runtime.errors import FailedPrecondition, InvalidArgument
from services.common import cpu
from services.common.progress import Report

log = logging.getLogger(__name__)
MIN_CALIBRATION_IMAGES = 20  # fewer makes statistics noisy: warn
PRESETS = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
OVERFLOW = {"enable": OverflowFix.ENABLE, "first_layer": OverflowFix.FIRST_LAYER, "disable": OverflowFix.DISABLE}


@dataclass(frozen=True)
class QuantizeConfig:
    method: str = "default"  # default | accuracy_aware
    preset: str = "auto"  # auto | performance | mixed
    subset_size: int = 0  # 0: all calibration images (subset_fraction applies first)
    subset_fraction: float = 0.0
    fast_bias_correction: bool | None = None  # None: auto
    overflow_fix: str = "auto"  # auto | enable | first_layer | disable
    model_type: str = ""
    ignored_scope: tuple[str, ...] = ()
    target_device: str = "ANY"
    max_drop: float = 0.01  # both methods: AccuracyAware restores within it, Default's result is judged by it
    drop_type: str = "absolute"  # absolute | relative ("" in an effective config: no bound was applied)
    # the automatic choice keeps the fastest candidate whose metric is within this of the best one
    agreement_bound: float = 0.01


@dataclass
class Candidate:
    description: str
    metric: float
    throughput_fps: float  # 0: not measured (out of reach of the best metric, or its twin in bias correction was)
    chosen: bool = False


@dataclass
class Validation:
    """How models are judged: metric(compiled model) -> float, higher is better; fps(model) -> float.

    The parent is compiled in f32 (the reference); candidates as they will be deployed. parent: the parent's
    metric when making the validation already measured it (its predictions are the reference agreement
    compares with), so the parent is not predicted twice.
    """

    name: str
    metric: Callable[[ov.CompiledModel], float]
    fps: Callable[[ov.Model], float]
    parent: float | None = None

    def judge(self, model: ov.Model, reference: bool = False) -> float:
        properties = {"INFERENCE_PRECISION_HINT": "f32"} if reference else {}
        return self.metric(ov.Core().compile_model(model, "CPU", properties))

    def judge_parent(self, model: ov.Model) -> float:
        return self.parent if self.parent is not None else self.judge(model, reference=True)


@dataclass
class Outcome:
    model: ov.Model
    config: QuantizeConfig
    metric_name: str = ""
    metric_before: float = 0.0
    metric_after: float = 0.0
    fp_layers: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    calibration_images: int = 0
    # metric_before - metric_after as config.drop_type reads it (judge_drop); None: nothing was measured
    accuracy_drop: float | None = None
    within_max_drop: bool = False


def overflow_choices(config: QuantizeConfig) -> list[str]:
    """The given setting, else from the instruction set: VNNI/AMX do not saturate, so the fix only costs
    precision there; without VNNI, the fix on every layer and on the first one only are both worth measuring."""
    if config.overflow_fix != "auto":
        return [config.overflow_fix]
    return ["disable"] if cpu.has_vnni() else ["enable", "first_layer"]


@dataclass(frozen=True)
class Setting:
    """One NNCF configuration the Default method calibrates with."""

    preset: str
    overflow_fix: str
    fast_bias_correction: bool

    @property
    def quantizers(self) -> tuple[str, str]:
        """What MinMax's FakeQuantize placement and ranges depend on. Settings alike here differ only in bias
        values: they share MinMax's model and run at one speed."""
        return self.preset, self.overflow_fix

    def describe(self) -> str:
        bias = "fast bias correction" if self.fast_bias_correction else "full bias correction"
        return f"{self.preset} preset, overflow fix {self.overflow_fix.replace('_', ' ')}, {bias}"


def candidate_settings(config: QuantizeConfig) -> list[Setting]:
    """What the Default method measures: with the automatic preset, every preset x overflow handling x bias
    correction left open; with an explicit preset, only the open overflow handling. The first is the fallback."""
    if config.preset not in ("auto", *PRESETS):
        raise InvalidArgument(f"unknown preset {config.preset!r}", field="config.preset")
    auto = config.preset == "auto"
    presets = list(PRESETS) if auto else [config.preset]
    if config.fast_bias_correction is not None:
        biases = [config.fast_bias_correction]
    else:
        biases = [True, False] if auto else [True]
    return [Setting(preset, overflow, bias) for preset in presets for overflow in overflow_choices(config)
            for bias in biases]


def is_quantized(model: ov.Model) -> bool:
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops()) or any(
        op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() in ("i8", "u8")
        and op.get_output_size() and op.get_output_shape(0) and len(op.get_output_shape(0)) >= 2
        for op in model.get_ordered_ops())


def subset(images: list[np.ndarray], config: QuantizeConfig) -> list[np.ndarray]:
    if config.subset_fraction < 0 or config.subset_fraction > 1:
        raise InvalidArgument("subset_fraction must be within (0, 1]", field="config.subset_fraction")
    if config.subset_size < 0:
        raise InvalidArgument("subset_size must not be negative", field="config.subset_size")
    count = len(images)
    if config.subset_fraction:
        count = max(1, round(count * config.subset_fraction))
    if config.subset_size:
        count = min(count, config.subset_size)
    # spread the subset over the whole set, not its first frames
    picks = np.linspace(0, len(images) - 1, count).round().astype(int) if count < len(images) else range(count)
    return [images[i] for i in picks]


def _nncf_kwargs(config: QuantizeConfig, setting: Setting, count: int) -> dict:
    try:
        target = TargetDevice[config.target_device.upper() or "ANY"]
    except KeyError:
        raise InvalidArgument(f"unknown target device {config.target_device!r}", field="config.target_device") from None
    kwargs = dict(preset=PRESETS[setting.preset], target_device=target, subset_size=count,
                  fast_bias_correction=setting.fast_bias_correction,
                  ignored_scope=nncf.IgnoredScope(patterns=list(config.ignored_scope)) if config.ignored_scope
                  else None)
    if config.model_type:
        try:
            kwargs["model_type"] = ModelType(config.model_type.lower())
        except ValueError:
            raise InvalidArgument(f"unknown model type {config.model_type!r}", field="config.model_type") from None
    return kwargs


def _advanced(setting: Setting) -> AdvancedQuantizationParameters:
    return AdvancedQuantizationParameters(overflow_fix=OVERFLOW[setting.overflow_fix])


@contextmanager
def _refusals():
    """NNCF's refusal of a configuration (e.g. an ignored scope that matches nothing) is the request's fault."""
    try:
        yield
    except nncf.ValidationError as exc:
        raise InvalidArgument(f"NNCF refused the configuration: {exc}", field="config") from None


def _quantize_once(model: ov.Model, data: nncf.Dataset, config: QuantizeConfig, setting: Setting,
                   count: int) -> ov.Model:
    with _refusals():
        return nncf.quantize(model.clone(), data, advanced_parameters=_advanced(setting),
                             **_nncf_kwargs(config, setting, count))


def calibrations(model: ov.Model, data: nncf.Dataset, config: QuantizeConfig, settings: list[Setting],
                 count: int, share: bool = True) -> Iterator[tuple[Setting, ov.Model]]:
    """Each setting's INT8 model, in order, exactly as nncf.quantize makes it (the same bytes).

    nncf.quantize runs one pipeline step for a CNN: MinMax then (fast) bias correction, on statistics of the
    FP model collected in one inference pass over the calibration images. That pass is most of a run, and the
    settings' statistic points are all on the FP model, so they are collected together in one pass; MinMax
    depends on the preset and overflow fix only, so settings differing in bias correction share its model.
    Pipelines of more steps (transformer models: SmoothQuant first) or with If bodies are run one by one."""
    with _refusals():
        kwargs = {setting: _nncf_kwargs(config, setting, count) for setting in settings}
        pipelines = {setting: create_ptq_pipeline(advanced_parameters=_advanced(setting), **kwargs[setting])
                     for setting in settings}
    steps = {setting: pipeline.pipeline_steps for setting, pipeline in pipelines.items()}
    if not share or get_number_if_op(model) or any(
            len(step) != 1 or not isinstance(step[0][0], MinMaxQuantization) for step in steps.values()):
        for setting in settings:
            yield setting, _quantize_once(model, data, config, setting, count)
        return

    model = remove_friendly_name_duplicates(model.clone())
    graph = GraphConverter.create_nncf_graph(model)
    # one MinMax per preset and overflow fix (the first setting's), every setting's bias correction
    minmax = {}
    for setting in settings:
        minmax.setdefault(setting.quantizers, steps[setting][0][0])
    aggregator = StatisticsAggregatorFactory.create(model, data)
    with _refusals():
        for algorithm in [*minmax.values(), *(a for s in settings for a in steps[s][0][1:])]:
            aggregator.register_statistic_points(algorithm.get_statistic_points(model, graph))
        aggregator.collect_statistics(model, graph)
    statistics = aggregator.statistic_points

    quantized_by = {}  # Setting.quantizers -> MinMax's model and graph, while a setting still needs them
    for i, setting in enumerate(settings):
        key = setting.quantizers
        if key not in quantized_by:
            with _refusals():
                quantized = minmax[key].apply(model, graph, statistics)
            quantized_by[key] = (quantized, build_graph(quantized))
        quantized, quantized_graph = quantized_by[key]
        if not any(s.quantizers == key for s in settings[i + 1:]):
            del quantized_by[key]
        for algorithm in steps[setting][0][1:]:  # out of place: MinMax's model stays as it was
            quantized = algorithm.apply(quantized, quantized_graph, statistics)
        advanced = _advanced(setting)
        if is_weight_compression_needed(advanced):
            compress_quantize_weights_transformation(quantized)
        # what nncf.quantize records in the model's rt_info
        dump_parameters(quantized, {
            "preset": kwargs[setting]["preset"], "target_device": kwargs[setting]["target_device"].value,
            "subset_size": count, "fast_bias_correction": setting.fast_bias_correction,
            "model_type": kwargs[setting].get("model_type"), "ignored_scope": kwargs[setting]["ignored_scope"],
            "advanced_parameters": convert_to_dict_recursively(advanced)})
        yield setting, quantized


def quantize(model: ov.Model, images: list[np.ndarray], config: QuantizeConfig,
             validation: Validation | None = None, report: Report = lambda *a, **k: None) -> Outcome:
    if is_quantized(model):
        raise FailedPrecondition("the model is already quantized", field="model")
    if config.method not in ("default", "accuracy_aware"):
        raise InvalidArgument(f"unknown method {config.method!r}", field="config.method")
    calibration = subset(images, config)
    if not calibration:
        raise FailedPrecondition("the dataset has no usable images to calibrate on", field="dataset")
    warnings = []
    if len(calibration) < MIN_CALIBRATION_IMAGES:
        warnings.append(f"only {len(calibration)} calibration images: statistics may be noisy; "
                        f"use {MIN_CALIBRATION_IMAGES} or more")
    data = nncf.Dataset([image[None] for image in calibration])
    count = len(calibration)
    outcome = Outcome(model=model, config=config, warnings=warnings, calibration_images=count)

    if validation is not None:
        report("validate", 0.02, "measuring the parent")
        outcome.metric_name, outcome.metric_before = validation.name, validation.judge_parent(model)

    settings = candidate_settings(config)
    if len(settings) > 1 and validation is None:
        settings = settings[:1]
        warnings.append("no validation data: the automatic choice fell back to "
                        f"{settings[0].describe()}")

    # the fastest candidate whose metric is within the bound of the best one. Metrics first: a candidate that
    # falls out of reach of the best is dropped at once, so only models that can still win stay in memory,
    # and only those left in reach at the end have their throughput measured, one per speed (the others'
    # stays 0: unmeasured)
    report("statistics", 0.05, f"collecting statistics for {len(settings)} settings, {count} images")
    contenders: list[tuple[ov.Model, Candidate, Setting]] = []
    steps = calibrations(model, data, config, settings, count)
    for i, (setting, quantized) in enumerate(steps):
        description = setting.describe()
        if validation is None:
            contenders = [(quantized, Candidate(description, 0.0, 0.0), setting)]
            break
        report("validate", 0.05 + 0.4 * (i + 0.7) / len(settings), f"judging {description}")
        candidate = Candidate(description, validation.judge(quantized), 0.0)
        outcome.candidates.append(candidate)
        report("candidate", 0.05 + 0.4 * (i + 1) / len(settings), description, metric=candidate.metric)
        contenders.append((quantized, candidate, setting))
        top = max(c.metric for _, c, _ in contenders)
        contenders = [entry for entry in contenders if entry[1].metric >= top - config.agreement_bound]
        if i + 1 < len(settings):
            report("statistics", 0.05 + 0.4 * (i + 1) / len(settings), f"calibrating: {settings[i + 1].describe()}")
    if validation is not None:
        contenders = _one_per_speed(contenders)
        for j, (quantized, candidate, _) in enumerate(contenders):
            report("validate", 0.45 + 0.1 * j / len(contenders), f"measuring {candidate.description}")
            candidate.throughput_fps = validation.fps(quantized)
            report("candidate", 0.45 + 0.1 * (j + 1) / len(contenders), candidate.description,
                   metric=candidate.metric, fps=candidate.throughput_fps)
    quantized, chosen, setting = max(contenders, key=lambda entry: entry[1].throughput_fps)
    chosen.chosen = True
    outcome.config = effective_config(config, setting, count, judged=validation is not None)

    if config.method == "accuracy_aware":
        if validation is None:
            raise FailedPrecondition("AccuracyAware needs annotations or a parent to compare with", field="config")
        quantized = _accuracy_aware(model, data, config, setting, count, validation, report)
        chosen = Candidate("accuracy control from " + chosen.description, validation.judge(quantized),
                           validation.fps(quantized), True)
        for candidate in outcome.candidates:
            candidate.chosen = False
        outcome.candidates.append(chosen)
    outcome.model, outcome.metric_after = quantized, chosen.metric
    outcome.fp_layers = float_layers(quantized)
    if validation is not None:
        judge_drop(outcome)
    report("done", 1.0, f"{outcome.metric_name or 'metric'} {outcome.metric_after:.4f}")
    return outcome


def effective_config(config: QuantizeConfig, setting: Setting, count: int, judged: bool) -> QuantizeConfig:
    """The settings the method ran with: the chosen preset, overflow fix and bias correction; the images calibrated
    on as subset_size (subset_fraction is resolved into it); the target device by NNCF's name; model type and
    ignored scope as given (both reach NNCF); max_drop and drop_type, the bound the result is judged against, or
    cleared when nothing could be judged (no metric for this model)."""
    return replace(config, preset=setting.preset, overflow_fix=setting.overflow_fix,
                   fast_bias_correction=setting.fast_bias_correction, subset_size=count, subset_fraction=0.0,
                   target_device=TargetDevice[config.target_device.upper() or "ANY"].name,
                   max_drop=config.max_drop if judged else 0.0, drop_type=config.drop_type if judged else "")


def accuracy_drop(before: float, after: float, drop_type: str) -> float:
    """before - after; relative: as a share of before (absolute where before is 0)."""
    drop = before - after
    return drop / before if drop_type == "relative" and before else drop


def _in_points(drop: float, drop_type: str) -> str:
    return f"{100 * drop:.1f} %" if drop_type == "relative" else f"{100 * drop:.1f} points"


def judge_drop(outcome: Outcome) -> None:
    """The drop against the parent (its agreement with itself, or its own score against the annotations) and
    whether it is within max_drop, for either method; beyond it, a warning that says so and what to try next."""
    config = outcome.config
    drop = accuracy_drop(outcome.metric_before, outcome.metric_after, config.drop_type)
    outcome.accuracy_drop = drop
    outcome.within_max_drop = drop <= config.max_drop + 1e-9  # 1.0 - 0.99 is 0.0100000000000000089
    if outcome.within_max_drop:
        return
    relative = " --relative" if config.drop_type == "relative" else ""
    beyond = (f"{_in_points(drop, config.drop_type)} below the parent ({outcome.metric_name} "
              f"{outcome.metric_before:.4f} -> {outcome.metric_after:.4f}), beyond the bound of "
              f"{_in_points(config.max_drop, config.drop_type)} (max_drop {config.max_drop:g}, {config.drop_type})")
    scope = ("keep the most sensitive layers in floating point with an ignored scope (ignored_scope; "
             "CLI: --ignore PATTERN, repeatable)")
    if config.method == "accuracy_aware":
        outcome.warnings.append(
            f"accuracy control stopped outside the bound: the INT8 model is {beyond}; NNCF's accuracy control ended "
            f"there with {len(outcome.fp_layers)} layers in floating point and the best it reached is kept. To get "
            f"within it, {scope}, or accept a larger max_drop (CLI: --max-drop)")
    else:
        outcome.warnings.append(
            f"the INT8 model is {beyond}: the Default method keeps the fastest candidate whatever its drop. To stay "
            f"within the bound, run AccuracyAware with max_drop {config.max_drop:g} (CLI: --accuracy-aware --max-drop "
            f"{config.max_drop:g}{relative}; console: Method AccuracyAware; API: method "
            f"QUANTIZATION_METHOD_ACCURACY_AWARE), or {scope}")


def _one_per_speed(contenders: list[tuple[ov.Model, Candidate, Setting]]) -> list[tuple[ov.Model, Candidate, Setting]]:
    """Of settings with the same quantizers (differing only in bias correction), the better metric (the first on
    a tie): such models run at one speed, and measuring each would let the machine's noise pick between them."""
    best: dict[tuple[str, str], tuple[ov.Model, Candidate, Setting]] = {}
    for entry in contenders:
        key = entry[2].quantizers
        if key not in best or entry[1].metric > best[key][1].metric:
            best[key] = entry
    return list(best.values())


def _accuracy_aware(model, data, config, setting: Setting, count, validation: Validation, report: Report):
    report("accuracy_control", 0.6, f"restoring accuracy within {config.max_drop} ({config.drop_type})")

    def validate(compiled: ov.CompiledModel, _items) -> float:
        value = validation.metric(compiled)
        report("accuracy_control", 0.7, f"{validation.name} {value:.4f}", metric=value)
        return value

    with _refusals():
        return nncf.quantize_with_accuracy_control(
            model.clone(), data, data, validate, max_drop=config.max_drop,
            drop_type=DropType.RELATIVE if config.drop_type == "relative" else DropType.ABSOLUTE,
            advanced_quantization_parameters=_advanced(setting),
            **_nncf_kwargs(config, setting, count),
        )


def float_layers(model: ov.Model) -> list[str]:
    """Convolutions and MatMuls left in floating point: no FakeQuantize feeds their weights or activations."""
    kept = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        fed_by = {op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())}
        if "FakeQuantize" not in fed_by:
            kept.append(op.get_friendly_name())
    return kept
