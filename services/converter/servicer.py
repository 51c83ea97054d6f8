"""ConverterService: protobuf in, one call of services.converter.stored, protobuf out."""

from __future__ import annotations

import grpc
import openvino as ov

from services.common.analysis import analysis_to_pb, artifact_to_pb
from services.common.artifacts import content_key
from workbench_runtime.errors import InvalidArgument
from services.common.object_store import ObjectStore
from services.common.pb import ir_from_pb, ref_from_pb, struct_of
from services.common.progress import run_reporting
from services.common.settings import Settings
from services.converter.convert import ConvertOptions
from services.converter.stored import Converted, UploadedFile, analyze_stored, convert_stored
from workbench.v1 import common_pb2, converter_pb2, converter_pb2_grpc

SERVICE_NAME = converter_pb2.DESCRIPTOR.services_by_name["ConverterService"].full_name


def options_from_pb(options: common_pb2.ConvertOptions) -> ConvertOptions:
    return ConvertOptions(
        input_shapes=dict(options.input_shapes), layouts=dict(options.layouts),
        mean_values=list(options.mean_values), scale_values=list(options.scale_values),
        reverse_input_channels=options.reverse_input_channels, compress_to_fp16=options.compress_to_fp16,
        outputs=list(options.outputs),
    )


def files_from_pb(model_files) -> dict[str, UploadedFile]:
    """The uploaded files by role (a ModelFiles field name), one file per role."""
    if not model_files:
        raise InvalidArgument("files must list the uploaded model files", field="files")
    files: dict[str, UploadedFile] = {}
    for i, item in enumerate(model_files):
        role = common_pb2.ModelFileRole.Name(item.role).removeprefix("MODEL_FILE_ROLE_").lower()
        if role == "unspecified":
            raise InvalidArgument(f"files[{i}].role must say what the file is", field=f"files[{i}].role")
        if role in files:
            raise InvalidArgument(f"two files have the role {role}", field=f"files[{i}].role")
        files[role] = UploadedFile(ref_from_pb(item.object, f"files[{i}].object"), item.file_name)
    return files


def framework_from_pb(framework: int) -> str:
    """convert.py's framework name ("ONNX", "DARKNET", ...); "" to detect it."""
    name = common_pb2.Framework.Name(framework).removeprefix("FRAMEWORK_")
    return "" if name == "UNSPECIFIED" else name


def converted_to_pb(converted: Converted) -> common_pb2.ModelArtifact:
    artifact = artifact_to_pb(converted.stored, converted.model, converted.analysis)
    artifact.source_framework = common_pb2.Framework.Value(f"FRAMEWORK_{converted.framework}")
    return artifact


class ConverterServicer(converter_pb2_grpc.ConverterServiceServicer):
    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store

    def ConvertModel(self, request: converter_pb2.ConvertModelRequest, context: grpc.ServicerContext):
        files, framework = files_from_pb(request.files), framework_from_pb(request.framework)
        options, bucket = options_from_pb(request.options), request.output_bucket or self.settings.bucket
        folder = f"models/ir/{_source_key(request)}"
        converted = yield from run_reporting(
            lambda report: convert_stored(self.store, bucket, files, framework, options, folder, report,
                                          max_tensor_elements=self.settings.max_tensor_elements), _event)
        yield converter_pb2.ConvertModelResponse(model=converted_to_pb(converted))

    def AnalyzeModel(self, request: converter_pb2.AnalyzeModelRequest, context):
        ir = ir_from_pb(common_pb2.ModelArtifact(xml=request.xml, bin=request.bin), field="")
        analysis, model_info = analyze_stored(self.store, ir)
        return converter_pb2.AnalyzeModelResponse(analysis=analysis_to_pb(analysis), model_info=struct_of(model_info))


def _source_key(request: converter_pb2.ConvertModelRequest) -> str:
    """The IR's folder: a key of everything the conversion depends on, so the same import is stored once."""
    inputs = sorted(f"{f.role}:{f.object.sha256 or f.object.bucket + '/' + f.object.key}" for f in request.files)
    return content_key(ov.get_version(), str(request.framework), *inputs,
                       request.options.SerializeToString(deterministic=True).hex())


def _event(p: common_pb2.Progress) -> converter_pb2.ConvertModelResponse:
    return converter_pb2.ConvertModelResponse(progress=p)
