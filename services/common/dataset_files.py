"""Reading a stored dataset (canonical layout: images/, annotations.json, manifest.json) back into work folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from workbench_runtime.errors import FailedPrecondition
from services.common.object_store import ObjectRef, ObjectStore, validate_prefix

MANIFEST, ANNOTATIONS = "manifest.json", "annotations.json"


@dataclass(frozen=True)
class StoredDataset:
    bucket: str
    prefix: str  # ends with "/"

    def manifest(self, store: ObjectStore) -> dict:
        validate_prefix(self.prefix, field="dataset.prefix")
        return store.get_json(self.bucket, self.prefix + MANIFEST, max_bytes=256 * 1024 * 1024)

    def annotations(self, store: ObjectStore) -> dict | None:
        key = self.prefix + ANNOTATIONS
        return store.get_json(self.bucket, key, max_bytes=1024**3) if store.exists(self.bucket, key) else None

    def image_key(self, entry: dict) -> str:
        return f"{self.prefix}images/{entry['file_name']}"


def download_images(store: ObjectStore, dataset: StoredDataset, entries: list[dict], folder: Path) -> Iterator[
        tuple[dict, Path]]:
    """Each entry's image fetched into folder (hash-checked), in order, a few at a time (ObjectStore.get_files)."""
    folder.mkdir(parents=True, exist_ok=True)
    objects = [(ObjectRef(dataset.bucket, dataset.image_key(entry), 0, entry.get("sha256") or ""),
                folder / entry["file_name"]) for entry in entries]
    yield from zip(entries, store.get_files(objects))


def read_bgr(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FailedPrecondition(f"stored image {path.name} cannot be decoded", field="dataset")
    return image
