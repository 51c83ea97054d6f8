"""What made a figure: inputs by role with their sha256, the full configuration, software versions and
the machine. Workers attach one to every result they return; the gateway adds the job id and compares
two of them to say whether two figures can be compared."""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from services.common import cpu
from workbench.v1 import common_pb2

PACKAGES = ("openvino", "nncf", "numpy", "opencv-python-headless", "workbench-services")


def provenance(service: str, inputs: dict[str, common_pb2.ObjectRef], config: Message | None) -> common_pb2.Provenance:
    made = common_pb2.Provenance(service=service, versions=_versions(), machine=machine())
    for role, ref in inputs.items():
        if ref.key:
            made.inputs[role].CopyFrom(ref)
    if config is not None:
        made.config.CopyFrom(_struct(config))
    made.time.GetCurrentTime()
    return made


def model_inputs(model: common_pb2.ModelArtifact, prefix: str = "model") -> dict[str, common_pb2.ObjectRef]:
    return {f"{prefix}.xml": model.xml, f"{prefix}.bin": model.bin}


def dataset_inputs(dataset: common_pb2.DatasetArtifact, prefix: str = "dataset") -> dict[str, common_pb2.ObjectRef]:
    return {f"{prefix}.manifest": dataset.manifest, f"{prefix}.annotations": dataset.annotations}


def machine() -> common_pb2.Machine:
    static = _static_machine()
    found = common_pb2.Machine()
    found.CopyFrom(static)
    found.load_average = os.getloadavg()[0]
    return found


def differences(first: common_pb2.Provenance, second: common_pb2.Provenance, ignore_inputs: tuple[str, ...] = ()
                ) -> list[str]:
    """What differs between two figures' provenances, beyond the inputs named in ignore_inputs (e.g. the
    model, which is what a comparison of two projects compares); empty when they are comparable."""
    found = []
    for role in sorted(set(first.inputs) | set(second.inputs)):
        if role.startswith(ignore_inputs):
            continue
        a, b = first.inputs.get(role), second.inputs.get(role)
        if (a.sha256 if a else "") != (b.sha256 if b else ""):
            found.append(f"{role} differs")
    a_config, b_config = json_format.MessageToDict(first.config), json_format.MessageToDict(second.config)
    for key in sorted(set(a_config) | set(b_config)):
        if a_config.get(key) != b_config.get(key):
            found.append(f"config {key}: {a_config.get(key)!r} vs {b_config.get(key)!r}")
    for field in ("cpu_model", "cpu_cores", "cpu_flags", "memory_bytes"):
        if getattr(first.machine, field) != getattr(second.machine, field):
            found.append(f"machine {field}: {getattr(first.machine, field)!r} vs {getattr(second.machine, field)!r}")
    for package in sorted(set(first.versions) | set(second.versions)):
        if first.versions.get(package) != second.versions.get(package):
            found.append(f"{package} {first.versions.get(package)} vs {second.versions.get(package)}")
    return found


def _struct(message: Message) -> struct_pb2.Struct:
    config = struct_pb2.Struct()
    config.update(json_format.MessageToDict(message, preserving_proto_field_name=True))
    return config


@functools.cache
def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


@functools.cache
def _static_machine() -> common_pb2.Machine:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return common_pb2.Machine(cpu_model=cpu.model_name(), cpu_cores=len(os.sched_getaffinity(0)),
                              cpu_flags=" ".join(f for f in cpu.FLAGS if f in cpu.machine_flags()), memory_bytes=memory)
