"""Dataset import through the gateway and the accuracy service: real gRPC, real SeaweedFS."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from pycocotools.coco import COCO

from workbench.client import JobFailedError, WorkbenchError
from workbench.v1 import common_pb2, gateway_pb2

IMAGES = Path(__file__).resolve().parents[2] / "data" / "images"


@pytest.fixture
def stack(workbench):
    return workbench.client, workbench.settings


def coco_zip(path: Path, broken_image: bool = False) -> Path:
    """A COCO detection set of the real photographs, one hand-made box per image."""
    images, annotations = [], []
    with zipfile.ZipFile(path, "w") as zf:
        for i, photo in enumerate(sorted(IMAGES.glob("*.jpg")), start=1):
            height, width = cv2.imread(str(photo)).shape[:2]
            zf.write(photo, f"images/{photo.name}")
            images.append({"id": i, "file_name": photo.name, "width": width, "height": height})
            annotations.append({"id": i, "image_id": i, "category_id": 1 + i % 2, "iscrowd": 0,
                                "bbox": [10, 20, width / 3, height / 3], "area": width * height / 9})
        if broken_image:
            zf.writestr("images/broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
            images.append({"id": 99, "file_name": "broken.jpg", "width": 10, "height": 10})
        categories = [{"id": 1, "name": "dog"}, {"id": 2, "name": "person"}]
        zf.writestr("annotations/instances.json",
                    json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def stored_keys(store, bucket: str, prefix: str = "datasets/") -> set[str]:
    return {r.key for r in store.list(bucket, prefix)}


def test_coco_archive_imports_into_the_canonical_layout(stack, tmp_path, store):
    client, settings = stack
    job = client.import_dataset("photos", [coco_zip(tmp_path / "photos.zip", broken_image=True)])
    dataset = client.get_dataset(client.wait_job(job.id).output.dataset_id)
    summary = dataset.artifact.summary
    assert summary.format == common_pb2.DATASET_FORMAT_COCO
    assert summary.image_count == 6 and summary.box_count == 6
    assert {c.name: c.boxes for c in summary.classes} == {"dog": 3, "person": 3}
    assert any("broken.jpg" in w for w in summary.warnings)
    keys = stored_keys(store, settings.bucket, dataset.artifact.prefix)
    assert sum(k.startswith(f"{dataset.artifact.prefix}images/") for k in keys) == 6
    coco = COCO()
    coco.dataset = store.get_json(settings.bucket, dataset.artifact.annotations.key)
    coco.createIndex()
    assert len(coco.getImgIds()) == 6 and len(coco.getAnnIds()) == 6
    manifest = store.get_json(settings.bucket, dataset.artifact.manifest.key)
    assert manifest["image_count"] == 6

    png = client.preview_dataset(dataset.id, max_images=4)
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 100


def test_hostile_archive_fails_the_job_and_leaves_nothing(stack, tmp_path, store):
    client, settings = stack
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.write(IMAGES / "dog.jpg", "images/dog.jpg")
        zf.writestr("../../outside.jpg", (IMAGES / "dog.jpg").read_bytes())
    before = stored_keys(store, settings.bucket)
    job = client.import_dataset("evil", [evil])
    with pytest.raises(JobFailedError) as err:
        client.wait_job(job.id)
    assert err.value.job.failed_service == "accuracy" and "outside" in err.value.job.error
    assert stored_keys(store, settings.bucket) == before
    assert list(client.list_datasets()) == []
    assert client.health() == "SERVING"


def test_plain_images_import_and_dataset_delete_removes_its_objects(stack, tmp_path, store):
    client, settings = stack
    paths = sorted(IMAGES.glob("*.jpg"))[:3]
    dataset = client.get_dataset(client.wait_job(client.import_dataset("loose", paths).id).output.dataset_id)
    assert dataset.artifact.summary.format == common_pb2.DATASET_FORMAT_IMAGES
    assert dataset.artifact.summary.image_count == 3 and not dataset.artifact.HasField("annotations")
    assert stored_keys(store, settings.bucket, dataset.artifact.prefix)
    project = client.create_project("uses it", dataset_id=dataset.id)
    with pytest.raises(WorkbenchError) as err:
        client.delete_dataset(dataset.id)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    client.delete_project(project.id)
    client.delete_dataset(dataset.id)
    assert not stored_keys(store, settings.bucket, dataset.artifact.prefix)


def test_import_refuses_missing_and_unready_uploads(stack):
    client, _ = stack
    with pytest.raises(WorkbenchError) as err:
        client._call(client.stub.ImportDataset,
                     gateway_pb2.ImportDatasetRequest(name="x", upload_ids=["upl-00000000000deadbeef"]))
    assert err.value.code == grpc.StatusCode.NOT_FOUND and "upl-00000000000deadbeef" in err.value.message
