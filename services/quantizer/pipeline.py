"""The quantizer's workflow on stored inputs, from an FP model in the object store to a stored INT8 one.

    download the model and the dataset (and a separate calibration set, when given)
    -> split the images into calibration and judging halves (or calibrate on the separate set, judge on all)
    -> how candidates are judged (validation.validation_for: a metric and a throughput measurement)
    -> quantize (calibrate.quantize: the Default method's candidates, AccuracyAware on top)
    -> warn when the calibration images are unlike the judged ones (similarity.unlike_warning)
    -> name the INT8 model by its inputs (content key) and store it -> analyse the stored model

Plain types in and out, no gRPC: the servicer translates protobuf to `QuantizeInputs` and `Quantized` back.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import openvino as ov

from services.common.analysis import Analysis, analyze
from services.common.artifacts import StoredIR, content_key, download_ir, upload_ir
from services.common.dataset_files import StoredDataset, download_images, read_bgr
from workbench_runtime.errors import FailedPrecondition
from services.common.object_store import ObjectStore
from workbench_runtime.preprocess import Preprocessing
from services.common.progress import Report
from services.quantizer.calibrate import Outcome, QuantizeConfig, quantize
from services.quantizer.similarity import unlike_warning
from services.quantizer.validation import model_input, split, validation_for
from services.common.tensor_cache import TensorCache, default_cache

READ_BGR = "read_bgr"  # the quantizer's decode (cv2.imread: EXIF orientation applied), a tensor-cache key part

MAX_IMAGES = 1000  # of a dataset, in its manifest's order


@dataclass(frozen=True)
class QuantizeInputs:
    model: StoredIR  # the FP model
    dataset: StoredDataset | None  # the project's dataset: judges the candidates (and calibrates, alone)
    calibration: StoredDataset | None  # a separate calibration set; None: half of the dataset calibrates
    config: QuantizeConfig
    bucket: str  # where the INT8 model goes
    # the request's configuration exactly as given, as it names the output (with the input hashes and the
    # OpenVINO version): the same request finds the model it made before
    config_key: str


@dataclass
class Quantized:
    outcome: Outcome  # how it was chosen: metric before and after, candidates, warnings, effective config
    stored: StoredIR  # the INT8 model in the object store
    model: ov.Model  # the stored INT8 model as read back
    analysis: Analysis  # of the stored model


def quantize_stored(store: ObjectStore, inputs: QuantizeInputs, report: Report) -> Quantized:
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        work_dir = Path(tmp)
        report("download", 0.0, "model and dataset")
        xml = download_ir(store, inputs.model, work_dir / "model")
        model = ov.Core().read_model(str(xml))
        preprocess = Preprocessing.from_model(model)
        if inputs.dataset is None:
            raise FailedPrecondition("quantization needs the project's dataset", field="dataset")
        annotations = inputs.dataset.annotations(store)
        cache = default_cache()
        ids, images = _images(store, inputs.dataset, work_dir / "images", preprocess, cache, report)
        if inputs.calibration is not None:
            _, calibration = _images(store, inputs.calibration, work_dir / "calibration", preprocess, cache, report)
            judged = list(zip(ids, images))
        else:
            calibration, judged = split(images, ids)
        tensors = [tensor for tensor, _, _ in calibration]
        validation = validation_for(model, judged, preprocess, annotations, report)
        outcome = quantize(model, tensors, inputs.config, validation, report)
        unlike = unlike_warning(model, tensors, [tensor for _, (tensor, _, _) in judged])
        if unlike:
            outcome.warnings.append(unlike)
        report("upload", 0.97, "storing the INT8 model")
        out = work_dir / "int8" / "model.xml"
        ov.save_model(outcome.model, str(out), compress_to_fp16=False)
        stored = upload_ir(store, inputs.bucket, out, f"models/int8/{output_key(inputs)}")
        saved = ov.Core().read_model(str(out))
        return Quantized(outcome, stored, saved, analyze(saved))


def output_key(inputs: QuantizeInputs) -> str:
    """The INT8 model's folder, named by what made it."""
    return content_key(inputs.model.xml.sha256, inputs.model.bin.sha256,
                       inputs.dataset.prefix if inputs.dataset else "",
                       inputs.calibration.prefix if inputs.calibration else "", inputs.config_key, ov.get_version())


def _images(store: ObjectStore, dataset: StoredDataset, into: Path, preprocess: Preprocessing,
            cache: TensorCache | None, report: Report) -> tuple[list[int], list[tuple]]:
    """Ids and model inputs (tensor, transform, size) of a dataset's images, each decoded (read_bgr, as the
    quantizer always has) and preprocessed once per content and preprocessing: through the tensor cache when
    there is one, so a second quantization of the dataset (another preset, AccuracyAware) decodes nothing."""
    entries = dataset.manifest(store)["images"][:MAX_IMAGES]
    ids, images = [], []
    for i, (entry, path) in enumerate(download_images(store, dataset, entries, into)):
        if cache is None:
            images.append(model_input(read_bgr(path), preprocess))
        else:
            images.append(cache.load(path.read_bytes(), preprocess, name=path.name, decode=lambda p=path: read_bgr(p),
                                     decoder=READ_BGR))
        ids.append(entry["id"])
        if i % 20 == 0:
            report("download", 0.02 * i / len(entries), f"{i + 1} of {len(entries)} images")
    return ids, images
