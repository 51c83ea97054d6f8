"""Model conversion to OpenVINO IR: framework detection, the frontends, and the user's options.

Plain domain code: local files in, an `openvino.Model` out. The servicer moves the files
between object storage and a temporary folder around it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import openvino as ov
from openvino._offline_transformations import apply_moc_transformations, compress_quantize_weights_transformation
from openvino.preprocess import PrePostProcessor

from services.common.archives import ArchiveLimits, extract, is_archive
from services.common.openvino_errors import reason
from services.converter import ultralytics
from workbench_runtime.errors import InvalidArgument

# Framework names as the contracts spell them (workbench.v1.Framework without the prefix).
DARKNET, ONNX, TENSORFLOW, TFLITE, PADDLE, OPENVINO = "DARKNET", "ONNX", "TENSORFLOW", "TFLITE", "PADDLE", "OPENVINO"
# OpenVINO frontend name -> framework
_FRONTENDS = {"onnx": ONNX, "tf": TENSORFLOW, "tflite": TFLITE, "paddle": PADDLE, "ir": OPENVINO}
# Formats that run code when loaded: refused before any parser sees them.
_CODE_SUFFIXES = {
    ".pt": "a PyTorch pickle", ".pth": "a PyTorch pickle", ".pkl": "a Python pickle", ".pickle": "a Python pickle",
    ".h5": "a Keras model (its Lambda layers run code)", ".keras": "a Keras model (its Lambda layers run code)",
    ".hdf5": "a Keras model (its Lambda layers run code)", ".joblib": "a joblib pickle",
}


@dataclass
class ConvertOptions:
    input_shapes: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)
    mean_values: list[float] = field(default_factory=list)
    scale_values: list[float] = field(default_factory=list)
    reverse_input_channels: bool = False
    compress_to_fp16: bool = False
    outputs: list[str] = field(default_factory=list)


@dataclass
class ModelFiles:
    """Local copies of the uploaded files, by role (names as in workbench.v1.ModelFileRole)."""

    model: Path | None = None
    darknet_cfg: Path | None = None
    darknet_weights: Path | None = None
    labels: Path | None = None
    ir_xml: Path | None = None
    ir_bin: Path | None = None
    archive: Path | None = None
    params: Path | None = None
    # the user's name for each local copy (those are named by role): messages speak of the user's files
    names: dict[Path, str] = field(default_factory=dict)

    def shown(self, path: Path) -> str:
        return self.names.get(path, path.name)


def refuse_code_formats(name: str, path: Path) -> None:
    suffix = "".join(Path(name.lower()).suffixes[-1:])
    if suffix in _CODE_SUFFIXES:
        raise InvalidArgument(f"{name} is {_CODE_SUFFIXES[suffix]}, which runs code when loaded; export it to ONNX",
                              field="files")
    head = path.read_bytes()[:4] if path.stat().st_size else b""
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise InvalidArgument(f"{name} is a Python pickle, which runs code when loaded", field="files")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if any(n.endswith("data.pkl") for n in zf.namelist()):
                raise InvalidArgument(f"{name} is a PyTorch checkpoint (a pickle that runs code when loaded)",
                                      field="files")


def detect_framework(path: Path, shown: str = "") -> str:
    """The framework of a single model file or directory, by asking OpenVINO's frontends; `shown` is the
    name messages give it (the user's file name)."""
    shown = shown or path.name
    frontend = ov.frontend.FrontEndManager().load_by_model(str(path))
    if frontend is None:
        raise InvalidArgument(f"{shown} is not a model of any supported framework (or it is damaged)",
                              field="files")
    name = frontend.get_name()
    if name not in _FRONTENDS:
        raise InvalidArgument(f"{shown} is a {name} model, which is not supported", field="files")
    return _FRONTENDS[name]


def load(framework: str, files: ModelFiles, workdir: Path) -> tuple[ov.Model, str]:
    """Read the uploaded files as an OpenVINO model; framework "" detects it. Returns (model, framework)."""
    if framework == DARKNET or (not framework and files.darknet_cfg):
        return _load_darknet(files), DARKNET
    if files.ir_xml or framework == OPENVINO:
        return _load_ir(files), OPENVINO
    source = _single_source(files, workdir)
    found = detect_framework(source, files.shown(source))
    if framework and found != framework:
        raise InvalidArgument(f"{files.shown(source)} is a {found} model, not {framework} as declared",
                              field="framework")
    if found == OPENVINO and source.is_file():
        _refuse_dtd(source)
    try:
        # The frontend API, not ov.convert_model: that one forks telemetry processes, unsafe beside gRPC.
        frontend = ov.frontend.FrontEndManager().load_by_model(str(source))
        model = frontend.convert(frontend.load(str(source)))
        # the graph clean-up ovc applies after a frontend (constant folding of shapes, fusions)
        apply_moc_transformations(model, cf=False, smart_reshape=True)
        compress_quantize_weights_transformation(model)
    except Exception as exc:  # frontends raise plain RuntimeErrors/OpConversionFailure/GeneralFailure
        raise InvalidArgument(f"{files.shown(source)}: {found} model could not be converted: "
                              f"{_without_local_paths(reason(exc), files, source)}", field="files") from None
    if found == ONNX and source.is_file():
        ultralytics.describe(model, source)  # an Ultralytics export describes itself in its metadata
    return model, found


def _without_local_paths(text: str, files: ModelFiles, source: Path) -> str:
    """A frontend's reason names the converter's temporary folder (e.g. external data "outside the base directory
    '/tmp/...'"): the user sees their file's name and "the model's folder" instead."""
    text = text.replace(str(source), files.shown(source)).replace(f"'{source.parent}'", "(the model's folder)")
    return text.replace(f"{source.parent}/", "")


def _load_darknet(files: ModelFiles) -> ov.Model:
    from services.converter.darknet import convert_darknet

    if not (files.darknet_cfg and files.darknet_weights):
        raise InvalidArgument("a Darknet model needs a cfg and a weights file", field="files")
    model = convert_darknet(files.darknet_cfg, files.darknet_weights, names=files.labels)
    model.input(0).get_node().set_layout(ov.Layout("NCHW"))
    return model


def _load_ir(files: ModelFiles) -> ov.Model:
    if not (files.ir_xml and files.ir_bin):
        raise InvalidArgument("an OpenVINO IR needs its .xml and .bin files", field="files")
    _refuse_dtd(files.ir_xml)
    try:
        return ov.Core().read_model(str(files.ir_xml), str(files.ir_bin))
    except Exception as exc:
        raise InvalidArgument(f"not a valid OpenVINO IR: {reason(exc)}", field="files") from None


def _refuse_dtd(xml: Path) -> None:
    """An IR never has a DTD (OpenVINO writes none); one declaring entities is an expansion or
    external-entity attack, refused before any parser sees it, as dataset XML is."""
    tail = b""
    with xml.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            window = tail + chunk
            if b"<!DOCTYPE" in window or b"<!ENTITY" in window:
                raise InvalidArgument("the IR's .xml declares a DTD or entities, which an OpenVINO IR never has: "
                                      "refused as a possible entity expansion attack", field="files")
            tail = chunk[-16:]


def _single_source(files: ModelFiles, workdir: Path) -> Path:
    if files.archive:
        # A SavedModel or Paddle model directory, uploaded as an archive.
        root = workdir / "archive"
        extract(files.archive, root, ArchiveLimits(max_members=10_000, allow_nested_archives=False), field="files")
        saved = [p.parent for p in root.rglob("saved_model.pb")]
        if saved:
            return saved[0]
        models = [p for p in root.rglob("*") if p.suffix in (".pdmodel", ".onnx", ".pb", ".tflite", ".xml")]
        if not models:
            raise InvalidArgument(f"{files.shown(files.archive)} holds no SavedModel, .pdmodel, .onnx, .pb or "
                                  ".tflite file", field="files")
        files.names[models[0]] = f"{models[0].relative_to(root)} in {files.shown(files.archive)}"
        return models[0]
    if files.model is None:
        raise InvalidArgument("no model file was given", field="files")
    if is_archive(files.model.name):
        return _single_source(ModelFiles(archive=files.model, names=files.names), workdir)
    return files.model


def apply_options(model: ov.Model, options: ConvertOptions) -> ov.Model:
    """Outputs, shapes, layouts and the preprocessing (mean, scale, channel order) built into the model."""
    if options.outputs:
        model = _keep_outputs(model, options.outputs)
    if options.input_shapes:
        try:
            model.reshape({_input(model, name).get_any_name(): ov.PartialShape(shape)
                           for name, shape in options.input_shapes.items()})
        except InvalidArgument:
            raise
        except Exception as exc:
            raise InvalidArgument(f"the model cannot take that input shape: {reason(exc)}",
                                  field="options.input_shapes") from None
    if options.layouts or options.mean_values or options.scale_values or options.reverse_input_channels:
        model = _preprocess(model, options)
    return model


def _input(model: ov.Model, name: str) -> ov.Output:
    if not name and len(model.inputs) == 1:
        return model.input(0)
    for port in model.inputs:
        if name in port.get_names():
            return port
    known = ", ".join(sorted(n for p in model.inputs for n in p.get_names()))
    raise InvalidArgument(f"the model has no input {name!r}; its inputs are {known}", field="options")


def _keep_outputs(model: ov.Model, names: list[str]) -> ov.Model:
    known = {n for op in model.get_ordered_ops() for port in op.outputs() for n in port.get_names()}
    missing = [n for n in names if n not in known]
    if missing:
        raise InvalidArgument(f"the model has no tensor named {', '.join(missing)}", field="options.outputs")
    current = {n for port in model.outputs for n in port.get_names()}
    for name in names:
        if name not in current:
            model.add_outputs(name)
    for result in list(model.get_results()):
        if not set(result.input_value(0).get_names()) & set(names):
            model.remove_result(result)
    return model


def _preprocess(model: ov.Model, options: ConvertOptions) -> ov.Model:
    ppp = PrePostProcessor(model)
    inputs = list(options.layouts) or [""]
    if (options.mean_values or options.scale_values or options.reverse_input_channels) and len(model.inputs) > 1 \
            and not options.layouts:
        raise InvalidArgument("mean, scale and channel reversal need layouts naming the image input",
                              field="options.layouts")
    try:
        for name in inputs:
            port = _input(model, name)
            info = ppp.input(port.get_any_name())
            layout = options.layouts.get(name) or ("NCHW" if port.get_partial_shape().rank.get_length() == 4 else "")
            if layout:
                info.model().set_layout(ov.Layout(layout))
            steps = info.preprocess()
            if options.reverse_input_channels:
                steps.reverse_channels()
            if options.mean_values:
                steps.mean(options.mean_values)
            if options.scale_values:
                steps.scale(options.scale_values)
        return ppp.build()
    except InvalidArgument:
        raise
    except Exception as exc:
        raise InvalidArgument(f"the preprocessing does not fit the model: {reason(exc)}",
                              field="options") from None


def save(model: ov.Model, xml: Path, compress_to_fp16: bool) -> tuple[Path, Path]:
    ov.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)
    return xml, xml.with_suffix(".bin")
