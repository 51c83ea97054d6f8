"""Deployment packages: a tar.gz with a project's IR, its model_info, a runnable inference script,
pinned requirements and a README.

The script reuses the services' own preprocessing and decoding (services/common/{preprocess,
detection,model_info,errors}.py, shipped inside the archive), so the deployed model sees exactly
the tensors it was calibrated and judged on.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from datetime import timedelta
from importlib import metadata
from pathlib import Path

import services.common as common
from services.common.artifacts import download_ir
from services.common.errors import FailedPrecondition
from services.common.object_store import ObjectStore
from services.common.pb import ir_from_pb
from services.gateway import db as schema
from services.gateway.db import Database
from services.gateway.jobs import JobContext, JobManager, now
from services.gateway.projects import Catalog
from services.gateway.records import Records, derived_id
from workbench.v1 import common_pb2, gateway_pb2

DOWNLOAD_EXPIRY = timedelta(hours=1)
RUNTIME_MODULES = ("__init__.py", "errors.py", "model_info.py", "preprocess.py", "detection.py")
REQUIREMENTS = ("openvino", "numpy", "opencv-python-headless")
KIND = common_pb2.JOB_KIND_EXPORT_PACKAGE

INFER = '''"""Detect objects in an image with the packaged OpenVINO model: python infer.py IMAGE [--device CPU]"""

import argparse
import sys
from pathlib import Path

import cv2
import openvino as ov

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from services.common.detection import Decoder  # noqa: E402
from services.common.model_info import model_info_strings  # noqa: E402
from services.common.preprocess import Preprocessing  # noqa: E402


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
    runtime = Path(common.__file__).parent
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(xml, "model/model.xml")
        tar.add(xml.with_suffix(".bin"), "model/model.bin")
        _add_text(tar, "model/model_info.json", json.dumps(model_info, indent=2))
        _add_text(tar, "services/__init__.py", "")
        for module in RUNTIME_MODULES:
            tar.add(runtime / module, f"services/common/{module}")
        _add_text(tar, "infer.py", INFER)
        _add_text(tar, "requirements.txt", "".join(f"{p}=={metadata.version(p)}\n" for p in REQUIREMENTS))
        _add_text(tar, "README.md", README.format(name=name, precision=precision, project_id=project_id))


def _add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower()).strip("-")[:60] or "model"
