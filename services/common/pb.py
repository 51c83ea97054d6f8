"""Translation between the plain domain types and their protobuf messages, for the servicers."""

from __future__ import annotations

from google.protobuf import struct_pb2

from services.common.artifacts import StoredIR
from workbench_runtime.errors import InvalidArgument
from services.common.object_store import ObjectRef, validate_bucket, validate_key
from workbench.v1 import common_pb2


def ref_to_pb(ref: ObjectRef) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(bucket=ref.bucket, key=ref.key, size=ref.size, sha256=ref.sha256)


def ref_from_pb(ref: common_pb2.ObjectRef, field: str) -> ObjectRef:
    if not ref.bucket or not ref.key:
        raise InvalidArgument(f"{field} must name a bucket and a key", field=field)
    validate_bucket(ref.bucket, field=field)
    validate_key(ref.key, field=field)
    return ObjectRef(ref.bucket, ref.key, ref.size, ref.sha256)


def ir_from_pb(model: common_pb2.ModelArtifact, field: str = "model") -> StoredIR:
    return StoredIR(ref_from_pb(model.xml, f"{field}.xml"), ref_from_pb(model.bin, f"{field}.bin"))


def struct_of(values: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def progress(stage: str, fraction: float | None = None, message: str = "", **metrics: float) -> common_pb2.Progress:
    """A Progress message; fraction is clamped to 0..1 and left unset when unknown."""
    result = common_pb2.Progress(stage=stage, message=message)
    if fraction is not None:
        result.fraction = max(0.0, min(1.0, fraction))
    if metrics:
        result.metrics.update(metrics)
    return result
