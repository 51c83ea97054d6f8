"""ConverterService: uploaded files from storage -> OpenVINO IR in storage, with its analysis."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import grpc
import openvino as ov

from services.common.analysis import analysis_to_pb, analyze, artifact_to_pb
from services.common.artifacts import content_key, download_ir, upload_ir
from services.common.errors import InvalidArgument
from services.common.model_info import model_info_strings
from services.common.object_store import ObjectStore
from services.common.pb import ir_from_pb, progress, ref_from_pb, struct_of
from services.common.settings import Settings
from services.converter.convert import ConvertOptions, ModelFiles, apply_options, load, refuse_code_formats, save
from workbench.v1 import common_pb2, converter_pb2, converter_pb2_grpc

SERVICE_NAME = converter_pb2.DESCRIPTOR.services_by_name["ConverterService"].full_name
_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,10}){1,2}$")


def options_from_pb(options: common_pb2.ConvertOptions) -> ConvertOptions:
    return ConvertOptions(
        input_shapes=dict(options.input_shapes), layouts=dict(options.layouts),
        mean_values=list(options.mean_values), scale_values=list(options.scale_values),
        reverse_input_channels=options.reverse_input_channels, compress_to_fp16=options.compress_to_fp16,
        outputs=list(options.outputs),
    )


class ConverterServicer(converter_pb2_grpc.ConverterServiceServicer):
    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store

    def ConvertModel(self, request: converter_pb2.ConvertModelRequest, context: grpc.ServicerContext):
        if not request.files:
            raise InvalidArgument("files must list the uploaded model files", field="files")
        bucket = request.output_bucket or self.settings.bucket
        framework = common_pb2.Framework.Name(request.framework).removeprefix("FRAMEWORK_")
        framework = "" if framework == "UNSPECIFIED" else framework
        with tempfile.TemporaryDirectory(prefix="convert-") as tmp:
            work = Path(tmp)
            yield _event(progress("download", 0.0, f"{len(request.files)} files"))
            files = self._download(request.files, work)
            yield _event(progress("convert", 0.2, framework.lower() or "detecting the framework"))
            model, source = load(framework, files, work)
            model = apply_options(model, options_from_pb(request.options))
            yield _event(progress("analyze", 0.6))
            analysis = analyze(model)
            yield _event(progress("save", 0.7))
            xml, _ = save(model, work / "ir" / "model.xml", request.options.compress_to_fp16)
            yield _event(progress("upload", 0.85))
            stored = upload_ir(self.store, bucket, xml, f"models/ir/{_source_key(request)}")
            artifact = artifact_to_pb(stored, model, analysis)
            artifact.source_framework = common_pb2.Framework.Value(f"FRAMEWORK_{source}")
            yield converter_pb2.ConvertModelResponse(model=artifact)

    def AnalyzeModel(self, request: converter_pb2.AnalyzeModelRequest, context):
        ir = ir_from_pb(common_pb2.ModelArtifact(xml=request.xml, bin=request.bin), field="")
        with tempfile.TemporaryDirectory(prefix="analyze-") as tmp:
            xml = download_ir(self.store, ir, Path(tmp))
            model, _ = load("OPENVINO", ModelFiles(ir_xml=xml, ir_bin=xml.with_suffix(".bin")), Path(tmp))
            return converter_pb2.AnalyzeModelResponse(
                analysis=analysis_to_pb(analyze(model)), model_info=struct_of(model_info_strings(model))
            )

    def _download(self, model_files, work: Path) -> ModelFiles:
        files = ModelFiles()
        for i, item in enumerate(model_files):
            role = common_pb2.ModelFileRole.Name(item.role).removeprefix("MODEL_FILE_ROLE_").lower()
            if role == "unspecified":
                raise InvalidArgument(f"files[{i}].role must say what the file is", field=f"files[{i}].role")
            if getattr(files, role) is not None:
                raise InvalidArgument(f"two files have the role {role}", field=f"files[{i}].role")
            ref = ref_from_pb(item.object, f"files[{i}].object")
            # Local names keep only the suffix the frontends look at, never the user's path.
            suffix = _SUFFIX.search(item.file_name)
            path = work / "input" / (("model.pdiparams" if role == "params" else role) + (
                "" if role == "params" or not suffix else suffix.group(0).lower()))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.store.get_file(ref.bucket, ref.key, path, expected_sha256=ref.sha256 or None)
            files.names[path] = item.file_name or path.name
            refuse_code_formats(files.shown(path), path)
            setattr(files, role, path)
        if files.model and files.params:  # Paddle expects model.pdmodel beside model.pdiparams
            renamed = files.model.rename(files.model.with_name("model.pdmodel"))
            files.names[renamed] = files.names.pop(files.model)
            files.model = renamed
        return files


def _source_key(request: converter_pb2.ConvertModelRequest) -> str:
    inputs = sorted(f"{f.role}:{f.object.sha256 or f.object.bucket + '/' + f.object.key}" for f in request.files)
    return content_key(ov.get_version(), str(request.framework), *inputs,
                       request.options.SerializeToString(deterministic=True).hex())


def _event(p: common_pb2.Progress) -> converter_pb2.ConvertModelResponse:
    return converter_pb2.ConvertModelResponse(progress=p)
