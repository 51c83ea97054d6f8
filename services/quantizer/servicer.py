"""QuantizerService: a stored FP model and dataset -> a stored INT8 model, with how it was chosen.

A thin translator: protobuf in -> services.quantizer.pipeline.quantize_stored -> protobuf out, its progress
streamed as it goes."""

from __future__ import annotations

from services.common.analysis import artifact_to_pb
from services.common.dataset_files import StoredDataset
from services.common.object_store import ObjectStore
from services.common.pb import ir_from_pb
from services.common.progress import Report, run_reporting
from services.common.provenance import dataset_inputs, model_inputs, provenance
from services.common.settings import Settings
from services.quantizer.calibrate import Outcome, QuantizeConfig
from services.quantizer.pipeline import QuantizeInputs, Quantized, quantize_stored
from workbench.v1 import common_pb2, quantizer_pb2, quantizer_pb2_grpc

SERVICE_NAME = quantizer_pb2.DESCRIPTOR.services_by_name["QuantizerService"].full_name


def config_from_pb(config: quantizer_pb2.QuantizationConfig) -> QuantizeConfig:
    return QuantizeConfig(
        method="accuracy_aware" if config.method == quantizer_pb2.QUANTIZATION_METHOD_ACCURACY_AWARE else "default",
        preset={quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE: "performance",
                quantizer_pb2.QUANTIZATION_PRESET_MIXED: "mixed"}.get(config.preset, "auto"),
        subset_size=config.subset_size, subset_fraction=config.subset_fraction,
        fast_bias_correction=config.fast_bias_correction if config.HasField("fast_bias_correction") else None,
        overflow_fix={quantizer_pb2.OVERFLOW_FIX_ENABLE: "enable", quantizer_pb2.OVERFLOW_FIX_FIRST_LAYER: "first_layer",
                      quantizer_pb2.OVERFLOW_FIX_DISABLE: "disable"}.get(config.overflow_fix, "auto"),
        model_type=config.model_type, ignored_scope=tuple(config.ignored_scope),
        target_device=config.target_device or "ANY", max_drop=config.max_drop or 0.01,
        drop_type="relative" if config.drop_type == quantizer_pb2.DROP_TYPE_RELATIVE else "absolute",
    )


def config_to_pb(config: QuantizeConfig) -> quantizer_pb2.QuantizationConfig:
    result = quantizer_pb2.QuantizationConfig(
        method=quantizer_pb2.QUANTIZATION_METHOD_ACCURACY_AWARE if config.method == "accuracy_aware"
        else quantizer_pb2.QUANTIZATION_METHOD_DEFAULT,
        preset={"performance": quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE,
                "mixed": quantizer_pb2.QUANTIZATION_PRESET_MIXED}.get(config.preset, 0),
        subset_size=config.subset_size,
        overflow_fix={"enable": quantizer_pb2.OVERFLOW_FIX_ENABLE, "first_layer": quantizer_pb2.OVERFLOW_FIX_FIRST_LAYER,
                      "disable": quantizer_pb2.OVERFLOW_FIX_DISABLE}.get(config.overflow_fix, 0),
        model_type=config.model_type, ignored_scope=list(config.ignored_scope), target_device=config.target_device,
        max_drop=config.max_drop,
        drop_type={"absolute": quantizer_pb2.DROP_TYPE_ABSOLUTE,
                   "relative": quantizer_pb2.DROP_TYPE_RELATIVE}.get(config.drop_type, 0),
    )
    if config.fast_bias_correction is not None:
        result.fast_bias_correction = config.fast_bias_correction
    return result


class QuantizerServicer(quantizer_pb2_grpc.QuantizerServiceServicer):
    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store

    def Quantize(self, request: quantizer_pb2.QuantizeRequest, context):
        def work(report: Report) -> quantizer_pb2.QuantizationResult:
            made = provenance("quantizer", {
                **model_inputs(request.model), **dataset_inputs(request.dataset),
                **dataset_inputs(request.calibration_dataset, "calibration")}, request.config)
            quantized = quantize_stored(self.store, self._inputs(request), report)
            result = quantized_to_pb(quantized, request.model.source_framework)
            result.provenance.CopyFrom(made)
            return result

        result = yield from run_reporting(work, lambda p: quantizer_pb2.QuantizeResponse(progress=p))
        yield quantizer_pb2.QuantizeResponse(result=result)

    def _inputs(self, request: quantizer_pb2.QuantizeRequest) -> QuantizeInputs:
        dataset, calibration = request.dataset, request.calibration_dataset
        return QuantizeInputs(
            model=ir_from_pb(request.model),
            dataset=StoredDataset(dataset.bucket, dataset.prefix) if dataset.prefix else None,
            calibration=StoredDataset(calibration.bucket, calibration.prefix) if calibration.prefix else None,
            config=config_from_pb(request.config), bucket=request.output_bucket or self.settings.bucket,
            config_key=request.config.SerializeToString(deterministic=True).hex(),
        )


def quantized_to_pb(quantized: Quantized, source_framework: int) -> quantizer_pb2.QuantizationResult:
    artifact = artifact_to_pb(quantized.stored, quantized.model, quantized.analysis)
    artifact.source_framework = source_framework
    return result_to_pb(quantized.outcome, artifact)


def result_to_pb(outcome: Outcome, artifact: common_pb2.ModelArtifact) -> quantizer_pb2.QuantizationResult:
    result = quantizer_pb2.QuantizationResult(
        model=artifact, effective_config=config_to_pb(outcome.config), metric_name=outcome.metric_name,
        metric_before=outcome.metric_before, metric_after=outcome.metric_after, fp_layers=outcome.fp_layers,
        candidates=[quantizer_pb2.QuantizationCandidate(description=c.description, metric=c.metric,
                                                        throughput_fps=c.throughput_fps, chosen=c.chosen)
                    for c in outcome.candidates],
        warnings=outcome.warnings, calibration_images=outcome.calibration_images,
        within_max_drop=outcome.within_max_drop,
    )
    if outcome.accuracy_drop is not None:
        result.accuracy_drop = outcome.accuracy_drop
    return result
