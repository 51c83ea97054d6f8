"""Deployment packages: a tar.gz with a project's IR, its model_info, a runnable inference script,
pinned requirements and a README.

The script runs the services' own preprocessing and decoding: the workbench-runtime package, pinned
in requirements.txt and shipped as a wheel inside the archive (made from the very code this gateway
runs), so the deployed model sees exactly the tensors it was calibrated and judged on.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import tempfile
import zipfile
from datetime import timedelta
from importlib import metadata
from pathlib import Path

import workbench_runtime
from services.common.artifacts import download_ir
from workbench_runtime.errors import FailedPrecondition
from services.common.object_store import ObjectStore
from services.common.pb import ir_from_pb
from services.gateway import db as schema
from services.gateway.db import Database
from services.gateway.jobs import JobContext, JobManager, now
from services.gateway.projects import Catalog
from services.gateway.records import Records, derived_id
from workbench.v1 import common_pb2, gateway_pb2

DOWNLOAD_EXPIRY = timedelta(hours=1)
RUNTIME = "workbench-runtime"
REQUIREMENTS = ("openvino", "numpy", "opencv-python-headless")
# a fixed time for every file in the wheel: the same code makes the same wheel, byte for byte
WHEEL_TIME = (2020, 1, 1, 0, 0, 0)
KIND = common_pb2.JOB_KIND_EXPORT_PACKAGE

INFER = '''"""Detect objects in an image with the packaged OpenVINO model: python infer.py IMAGE [--device CPU]"""

import argparse
import sys
from pathlib import Path

import cv2
import openvino as ov
from workbench_runtime.detection import Decoder
from workbench_runtime.model_info import model_info_strings
from workbench_runtime.preprocess import Preprocessing

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("image")
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--threshold", type=float, default=None, help="confidence (default: from model_info)")
    args = parser.parse_args()
    model = ov.Core().read_model(str(HERE / "model" / "model.xml"))
    preprocess, decoder = Preprocessing.from_model(model), Decoder.from_model(model, confidence_threshold=args.threshold)
    info = model_info_strings(model)
    labels = info.get("labels", "").split()
    image = cv2.imread(args.image)
    if image is None:
        sys.exit(f"cannot read {args.image}")
    compiled = ov.Core().compile_model(model, args.device)
    tensor, transform = preprocess(image)
    outputs = compiled(tensor[None])
    found = decoder({port.any_name: outputs[port] for port in compiled.outputs}, transform,
                    (image.shape[1], image.shape[0]))
    for box, score, label in zip(found.boxes, found.scores, found.labels):
        name = labels[label] if label < len(labels) else str(label)
        print(f"{name} {score:.3f} " + " ".join(f"{v:.1f}" for v in box))


if __name__ == "__main__":
    main()
'''

README = '''# {name}

An OpenVINO IR ({precision}) exported by Workbench from project {project_id}, with what it takes to run it.

    python -m venv .venv && .venv/bin/pip install -r requirements.txt
    .venv/bin/python infer.py picture.jpg

requirements.txt pins the versions the model was measured with, and `workbench-runtime` (the model's
preprocessing and decoding) comes as the wheel in `wheels/`.

`infer.py` prints one detection a line: label, score, x1 y1 x2 y2 in the picture's pixels. The model's
preprocessing and decoding settings are in `model/model_info.json` (and inside `model/model.xml`).
'''


class Packages:
    def __init__(self, database: Database, catalog: Catalog, jobs: JobManager, store: ObjectStore, bucket: str):
        self.catalog, self.jobs, self.store, self.bucket = catalog, jobs, store, bucket
        self.records: Records[gateway_pb2.DeploymentPackage] = Records(
            database, schema.packages, "pkg", gateway_pb2.DeploymentPackage, lambda p: {"project_id": p.project_id})
        jobs.register(KIND, gateway_pb2.ExportPackageRequest, self._run)

    def start(self, request: gateway_pb2.ExportPackageRequest) -> common_pb2.Job:
        existing = self.jobs.for_request(KIND, request.request_id)
        if existing:
            return existing
        self._inputs(request.project_id)
        return self.jobs.submit(KIND, request, project_id=request.project_id, request_id=request.request_id)

    def _inputs(self, project_id: str) -> tuple[gateway_pb2.Project, gateway_pb2.Model]:
        project = self.catalog.projects.get(project_id, "project_id")
        if not project.model_id:
            raise FailedPrecondition(f"project {project.id} has no model", field="project_id")
        return project, self.catalog.models.get(project.model_id, "project.model_id")

    def _run(self, ctx: JobContext, request: gateway_pb2.ExportPackageRequest) -> common_pb2.JobOutput:
        project, model = self._inputs(request.project_id)
        package_id = derived_id("pkg", ctx.job.id)
        with tempfile.TemporaryDirectory(prefix="package-") as tmp:
            ctx.progress("download", 0.1, "the IR")
            xml = download_ir(self.store, ir_from_pb(model.artifact), Path(tmp) / "model")
            archive = Path(tmp) / "package.tar.gz"
            ctx.progress("pack", 0.5)
            build_archive(archive, xml, dict(model.artifact.model_info), project.name, project.id,
                          "INT8" if model.artifact.analysis.quantized else "FP32")
            ctx.check_cancelled()
            ref = self.store.put_file(self.bucket, f"packages/{package_id}/{_slug(project.name)}.tar.gz", archive)
        package = gateway_pb2.DeploymentPackage(id=package_id, project_id=project.id, create_time=now())
        package.archive.bucket, package.archive.key = ref.bucket, ref.key
        package.archive.size, package.archive.sha256 = ref.size, ref.sha256
        ctx.on_success(lambda tx: self.records.insert(package, tx))
        return common_pb2.JobOutput(project_id=project.id, package_id=package_id)

    def get(self, package_id: str) -> gateway_pb2.GetPackageResponse:
        package = self.records.get(package_id, "package_id")
        url = self.store.presigned_get(package.archive.bucket, package.archive.key, DOWNLOAD_EXPIRY)
        return gateway_pb2.GetPackageResponse(package=package, download_url=url)


def build_archive(archive: Path, xml: Path, model_info: dict, name: str, project_id: str, precision: str) -> None:
    wheel_name, wheel = runtime_wheel()
    version = metadata.version(RUNTIME)
    requirements = ["--find-links ./wheels", f"{RUNTIME}=={version}",
                    *(f"{p}=={metadata.version(p)}" for p in REQUIREMENTS)]
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(xml, "model/model.xml")
        tar.add(xml.with_suffix(".bin"), "model/model.bin")
        _add_bytes(tar, "model/model_info.json", json.dumps(model_info, indent=2).encode())
        _add_bytes(tar, f"wheels/{wheel_name}", wheel)
        _add_bytes(tar, "infer.py", INFER.encode())
        _add_bytes(tar, "requirements.txt", "".join(f"{line}\n" for line in requirements).encode())
        _add_bytes(tar, "README.md", README.format(name=name, precision=precision, project_id=project_id).encode())


def runtime_wheel() -> tuple[str, bytes]:
    """workbench-runtime as a pure-Python wheel (file name, bytes), made from the installed package the
    gateway itself runs: the archive carries the code its figures were measured with, not a rebuild."""
    version = metadata.version(RUNTIME)
    root = Path(workbench_runtime.__file__).parent
    files = {f"workbench_runtime/{path.name}": path.read_bytes() for path in sorted(root.glob("*.py"))}
    dist_info = f"workbench_runtime-{version}.dist-info"
    requires = "".join(f"Requires-Dist: {r}\n" for r in metadata.requires(RUNTIME) or ())
    files[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {RUNTIME}\nVersion: {version}\n"
                                      f"{requires}").encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: workbench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(f"{name},sha256={_urlsafe_digest(data)},{len(data)}\n" for name, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, WHEEL_TIME)
            info.external_attr, info.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    return f"workbench_runtime-{version}-py3-none-any.whl", out.getvalue()


def _urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower()).strip("-")[:60] or "model"
