"""The converter's work on object storage, as the plain domain calls its servicer wraps.

convert_stored: uploaded files (object references by role) -> a temporary folder -> an OpenVINO model
(convert.py) -> its analysis -> an IR stored under a content-addressed folder. analyze_stored: a stored
IR's analysis and model_info.

No gRPC here: progress goes to a report(stage, fraction, message) callback, failures are
workbench_runtime.errors exceptions.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import openvino as ov

from services.common.analysis import Analysis, analyze
from services.common.artifacts import StoredIR, download_ir, upload_ir
from workbench_runtime.model_info import model_info_strings
from services.common.object_store import ObjectRef, ObjectStore
from services.common.progress import Report
from services.converter.convert import ConvertOptions, ModelFiles, apply_options, load, refuse_code_formats, save
from services.converter.limits import refuse_oversized

_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,10}){1,2}$")


@dataclass(frozen=True)
class UploadedFile:
    """One uploaded model file: where it is stored and the user's name for it ("" when not given)."""

    object: ObjectRef
    file_name: str = ""


@dataclass(frozen=True)
class Converted:
    stored: StoredIR
    model: ov.Model
    analysis: Analysis
    framework: str  # the source framework, named as convert.py names it (DARKNET, ONNX, ...)


def convert_stored(store: ObjectStore, bucket: str, files: Mapping[str, UploadedFile], framework: str,
                   options: ConvertOptions, folder: str, report: Report, *, max_tensor_elements: int) -> Converted:
    """Convert the uploaded files (by role: a ModelFiles field name) and store the IR under bucket/folder.

    framework "" detects it. The same folder already holding an IR keeps the stored one (upload_ir). An input or
    constant with more than max_tensor_elements elements (0: no limit) is refused before anything is stored.
    """
    with tempfile.TemporaryDirectory(prefix="convert-") as tmp:
        work = Path(tmp)
        report("download", 0.0, f"{len(files)} files")
        local = fetch_files(store, files, work)
        report("convert", 0.2, framework.lower() or "detecting the framework")
        model, source = load(framework, local, work)
        model = apply_options(model, options)
        refuse_oversized(model, max_tensor_elements, options.input_shapes)
        report("analyze", 0.6)
        analysis = analyze(model, options.input_shapes)
        report("save", 0.7)
        xml, _ = save(model, work / "ir" / "model.xml", options.compress_to_fp16)
        report("upload", 0.85)
        stored = upload_ir(store, bucket, xml, folder)
        return Converted(stored, model, analysis, source)


def fetch_files(store: ObjectStore, files: Mapping[str, UploadedFile], work: Path) -> ModelFiles:
    """Download each file under a local name made of its role and the suffix the frontends look at (never the
    user's path), refusing formats that run code when loaded."""
    local = ModelFiles()
    for role, item in files.items():
        suffix = _SUFFIX.search(item.file_name)
        path = work / "input" / (("model.pdiparams" if role == "params" else role) + (
            "" if role == "params" or not suffix else suffix.group(0).lower()))
        path.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(item.object.bucket, item.object.key, path, expected_sha256=item.object.sha256 or None)
        local.names[path] = item.file_name or path.name
        refuse_code_formats(local.shown(path), path)
        setattr(local, role, path)
    if local.model and local.params:  # Paddle expects model.pdmodel beside model.pdiparams
        renamed = local.model.rename(local.model.with_name("model.pdmodel"))
        local.names[renamed] = local.names.pop(local.model)
        local.model = renamed
    return local


def analyze_stored(store: ObjectStore, ir: StoredIR) -> tuple[Analysis, dict[str, str]]:
    """A stored IR's analysis and its model_info values."""
    with tempfile.TemporaryDirectory(prefix="analyze-") as tmp:
        xml = download_ir(store, ir, Path(tmp))
        model, _ = load("OPENVINO", ModelFiles(ir_xml=xml, ir_bin=xml.with_suffix(".bin")), Path(tmp))
        return analyze(model), model_info_strings(model)
