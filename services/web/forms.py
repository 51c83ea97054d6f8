"""Form input → SDK arguments. Everything is checked before the first gateway call, so a bad form
changes nothing and says which field is wrong."""

from __future__ import annotations

from pathlib import PurePath

from starlette.datastructures import FormData, UploadFile

from workbench import WorkbenchClient
from workbench.v1 import common_pb2, gateway_pb2, quantizer_pb2

MAX_TEXT = 200
# the model form's file fields, as the CLI's flags of `workbench model import`
MODEL_FILE_FIELDS = {
    "cfg": common_pb2.MODEL_FILE_ROLE_DARKNET_CFG,
    "weights": common_pb2.MODEL_FILE_ROLE_DARKNET_WEIGHTS,
    "names": common_pb2.MODEL_FILE_ROLE_LABELS,
    "model": common_pb2.MODEL_FILE_ROLE_MODEL,
    "params": common_pb2.MODEL_FILE_ROLE_PARAMS,
    "xml": common_pb2.MODEL_FILE_ROLE_IR_XML,
    "bin": common_pb2.MODEL_FILE_ROLE_IR_BIN,
    "archive": common_pb2.MODEL_FILE_ROLE_ARCHIVE,
}
FRAMEWORKS = {"": common_pb2.FRAMEWORK_UNSPECIFIED, "darknet": common_pb2.FRAMEWORK_DARKNET,
              "onnx": common_pb2.FRAMEWORK_ONNX, "tensorflow": common_pb2.FRAMEWORK_TENSORFLOW,
              "tflite": common_pb2.FRAMEWORK_TFLITE, "paddle": common_pb2.FRAMEWORK_PADDLE,
              "openvino": common_pb2.FRAMEWORK_OPENVINO}
DATASET_FORMATS = {"": common_pb2.DATASET_FORMAT_UNSPECIFIED, "coco": common_pb2.DATASET_FORMAT_COCO,
                   "voc": common_pb2.DATASET_FORMAT_VOC, "imagenet": common_pb2.DATASET_FORMAT_IMAGENET,
                   "yolo": common_pb2.DATASET_FORMAT_YOLO, "images": common_pb2.DATASET_FORMAT_IMAGES}
PRESETS = {"auto": quantizer_pb2.QUANTIZATION_PRESET_UNSPECIFIED,
           "performance": quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE,
           "mixed": quantizer_pb2.QUANTIZATION_PRESET_MIXED}
METHODS = {"default": quantizer_pb2.QUANTIZATION_METHOD_DEFAULT,
           "accuracy_aware": quantizer_pb2.QUANTIZATION_METHOD_ACCURACY_AWARE}
HINTS = {"throughput": common_pb2.PERFORMANCE_HINT_THROUGHPUT, "latency": common_pb2.PERFORMANCE_HINT_LATENCY,
         "none": common_pb2.PERFORMANCE_HINT_NONE}


class FormError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def text(form: FormData, name: str, *, required: bool = True, label: str = "") -> str:
    value = str(form.get(name) or "").strip()
    if required and not value:
        raise FormError(name, f"{label or name} is required")
    if len(value) > MAX_TEXT:
        raise FormError(name, f"{label or name} is longer than {MAX_TEXT} characters")
    return value


def choice(form: FormData, name: str, options: dict, default: str = ""):
    value = str(form.get(name) or default)
    if value not in options:
        raise FormError(name, f"{name} must be one of: {', '.join(o or '(automatic)' for o in options)}")
    return options[value]


def integer(form: FormData, name: str, low: int, high: int, *, label: str = "") -> int:
    """0 when the field is empty (the gateway's default), else a whole number in [low, high]."""
    return _bounded(form, name, int, "a whole number", low, high, label) or 0


def number(form: FormData, name: str, low: float, high: float, *, label: str = "") -> float:
    """0.0 when the field is empty, else a number in [low, high]."""
    return float(_bounded(form, name, float, "a number", low, high, label) or 0.0)


def _bounded(form: FormData, name: str, parse, kind: str, low, high, label: str):
    raw = str(form.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = parse(raw)
    except ValueError:
        raise FormError(name, f"{label or name} must be {kind}, not {raw!r}") from None
    if not low <= value <= high:
        raise FormError(name, f"{label or name} must be between {low:g} and {high:g}, not {value:g}")
    return value


def integers(form: FormData, name: str, low: int, high: int, *, label: str = "") -> list[int]:
    """A comma-separated list such as "1, 2, 4"."""
    raw = str(form.get(name) or "").strip()
    values = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            value = int(part)
        except ValueError:
            raise FormError(name, f"{label or name} must be whole numbers separated by commas, not {raw!r}") from None
        if not low <= value <= high:
            raise FormError(name, f"{label or name}: {value} is not between {low} and {high}")
        values.append(value)
    if len(values) > 16:
        raise FormError(name, f"{label or name}: at most 16 values")
    return sorted(set(values))


def files(form: FormData, name: str) -> list[UploadFile]:
    """The non-empty files of a file field; an empty file is an error, no file at all is not."""
    found = []
    for item in form.getlist(name):
        if not isinstance(item, UploadFile) or not item.filename:
            continue  # a file input left empty
        if not item.size:
            raise FormError(name, f"{item.filename} is empty (0 bytes)")
        found.append(item)
    return found


def model_files(form: FormData) -> dict[int, UploadFile]:
    chosen = {}
    for field, role in MODEL_FILE_FIELDS.items():
        picked = files(form, field)
        if picked:
            chosen[role] = picked[0]
    if not chosen:
        raise FormError("files", "choose the model's files: a Darknet cfg and weights, an ONNX file, an IR .xml "
                                 "and .bin, ...")
    return chosen


def optimize_config(form: FormData) -> quantizer_pb2.QuantizationConfig:
    config = quantizer_pb2.QuantizationConfig(
        method=choice(form, "method", METHODS, "default"), preset=choice(form, "preset", PRESETS, "auto"))
    subset = integer(form, "subset_size", 1, 100_000, label="subset size")
    if subset:
        config.subset_size = subset
    # both methods: AccuracyAware restores within it; Default's result is judged against it (empty: 0.01)
    config.max_drop = number(form, "max_drop", 0.0, 1.0, label="maximum accuracy drop")
    if config.method == quantizer_pb2.QUANTIZATION_METHOD_ACCURACY_AWARE and not config.max_drop:
        raise FormError("max_drop", "AccuracyAware needs a maximum accuracy drop, e.g. 0.01")
    config.drop_type = quantizer_pb2.DROP_TYPE_ABSOLUTE
    return config


def benchmark_config(form: FormData) -> common_pb2.BenchmarkConfig:
    return common_pb2.BenchmarkConfig(
        hint=choice(form, "hint", {"": 0, **HINTS}),
        streams=integer(form, "streams", 1, 64), infer_requests=integer(form, "infer_requests", 1, 256),
        batch=integer(form, "batch", 1, 64),
        duration_seconds=number(form, "duration_seconds", 0.5, 600, label="duration"),
        performance_counters=True)


def sweep_grid(form: FormData) -> dict:
    grid = dict(batches=integers(form, "batches", 1, 64), streams=integers(form, "streams", 1, 64),
                infer_requests=integers(form, "infer_requests", 1, 256),
                latency_limit_ms=number(form, "latency_limit_ms", 0, 1e6, label="latency limit"))
    if not (grid["batches"] or grid["streams"] or grid["infer_requests"]):
        raise FormError("streams", "give at least one list of values to explore, e.g. streams 1, 2, 4")
    return grid


def upload(client: WorkbenchClient, file: UploadFile) -> gateway_pb2.Upload:
    """Pass a browser upload on to the gateway from the form parser's spooled file (no second copy), under
    the file's own name without any folder: the services tell formats apart by it."""
    file.file.seek(0)
    return client.upload_fileobj(PurePath(file.filename or "file").name, file.file, file.size or 0)
