"""QuantizerService: a stored FP model and dataset -> a stored INT8 model, with how it was chosen."""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc
import openvino as ov

from services.common.analysis import analyze, artifact_to_pb
from services.common.artifacts import content_key, download_ir, upload_ir
from services.common.dataset_files import StoredDataset, download_images, read_bgr
from services.common.errors import FailedPrecondition
from services.common.object_store import ObjectStore
from services.common.pb import ir_from_pb
from services.common.preprocess import Preprocessing
from services.common.progress import Report, run_reporting
from services.common.provenance import dataset_inputs, model_inputs, provenance
from services.common.settings import Settings
from services.quantizer.calibrate import Outcome, QuantizeConfig, quantize
from services.quantizer.similarity import unlike_warning
from services.quantizer.validation import split, validation_for
from workbench.v1 import common_pb2, quantizer_pb2, quantizer_pb2_grpc

SERVICE_NAME = quantizer_pb2.DESCRIPTOR.services_by_name["QuantizerService"].full_name
MAX_IMAGES = 1000


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
        drop_type=quantizer_pb2.DROP_TYPE_RELATIVE if config.drop_type == "relative" else quantizer_pb2.DROP_TYPE_ABSOLUTE,
    )
    if config.fast_bias_correction is not None:
        result.fast_bias_correction = config.fast_bias_correction
    return result


class QuantizerServicer(quantizer_pb2_grpc.QuantizerServiceServicer):
    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store

    def Quantize(self, request: quantizer_pb2.QuantizeRequest, context):
        config = config_from_pb(request.config)
        bucket = request.output_bucket or self.settings.bucket

        def work(report: Report) -> quantizer_pb2.QuantizationResult:
            with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
                work_dir = Path(tmp)
                report("download", 0.0, "model and dataset")
                made = provenance("quantizer", {
                    **model_inputs(request.model), **dataset_inputs(request.dataset),
                    **dataset_inputs(request.calibration_dataset, "calibration")}, request.config)
                xml = download_ir(self.store, ir_from_pb(request.model), work_dir / "model")
                model = ov.Core().read_model(str(xml))
                preprocess = Preprocessing.from_model(model)
                if not request.dataset.prefix:
                    raise FailedPrecondition("quantization needs the project's dataset", field="dataset")
                dataset = StoredDataset(request.dataset.bucket, request.dataset.prefix)
                annotations = dataset.annotations(self.store)
                ids, images = self._images(dataset, work_dir / "images", report)
                if request.calibration_dataset.prefix:
                    _, calibration = self._images(StoredDataset(request.calibration_dataset.bucket,
                                                                request.calibration_dataset.prefix),
                                                  work_dir / "calibration", report)
                    judged = list(zip(ids, images))
                else:
                    calibration, judged = split(images, ids)
                tensors = [preprocess(image)[0] for image in calibration]
                validation = validation_for(model, judged, preprocess, annotations, report)
                outcome = quantize(model, tensors, config, validation, report)
                unlike = unlike_warning(model, tensors, [preprocess(image)[0] for _, image in judged])
                if unlike:
                    outcome.warnings.append(unlike)
                report("upload", 0.97, "storing the INT8 model")
                out = work_dir / "int8" / "model.xml"
                ov.save_model(outcome.model, str(out), compress_to_fp16=False)
                key = content_key(request.model.xml.sha256, request.model.bin.sha256, request.dataset.prefix,
                                  request.calibration_dataset.prefix,
                                  request.config.SerializeToString(deterministic=True).hex(), ov.get_version())
                stored = upload_ir(self.store, bucket, out, f"models/int8/{key}")
                saved = ov.Core().read_model(str(out))
                artifact = artifact_to_pb(stored, saved, analyze(saved))
                artifact.source_framework = request.model.source_framework
                result = result_to_pb(outcome, artifact)
                result.provenance.CopyFrom(made)
                return result

        result = yield from run_reporting(work, lambda p: quantizer_pb2.QuantizeResponse(progress=p))
        yield quantizer_pb2.QuantizeResponse(result=result)

    def _images(self, dataset: StoredDataset, into: Path, report: Report) -> tuple[list[int], list]:
        entries = dataset.manifest(self.store)["images"][:MAX_IMAGES]
        ids, images = [], []
        for i, (entry, path) in enumerate(download_images(self.store, dataset, entries, into)):
            images.append(read_bgr(path))
            ids.append(entry["id"])
            if i % 20 == 0:
                report("download", 0.02 * i / len(entries), f"{i + 1} of {len(entries)} images")
        return ids, images


def result_to_pb(outcome: Outcome, artifact: common_pb2.ModelArtifact) -> quantizer_pb2.QuantizationResult:
    return quantizer_pb2.QuantizationResult(
        model=artifact, effective_config=config_to_pb(outcome.config), metric_name=outcome.metric_name,
        metric_before=outcome.metric_before, metric_after=outcome.metric_after, fp_layers=outcome.fp_layers,
        candidates=[quantizer_pb2.QuantizationCandidate(description=c.description, metric=c.metric,
                                                        throughput_fps=c.throughput_fps, chosen=c.chosen)
                    for c in outcome.candidates],
        warnings=outcome.warnings, calibration_images=outcome.calibration_images,
    )


def registrar(settings: Settings):
    def register(server: grpc.Server) -> list[str]:
        quantizer_pb2_grpc.add_QuantizerServiceServicer_to_server(
            QuantizerServicer(settings, ObjectStore.from_settings(settings)), server)
        return [SERVICE_NAME]

    return register
