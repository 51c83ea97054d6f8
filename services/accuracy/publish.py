"""Publishing an uploaded dataset: its source files in the store -> the canonical stored dataset.

The protocol: download the sources into a scratch folder (a few at a time); normalize them (services.accuracy.dataset_import),
uploading each accepted image to {prefix}images/ on UPLOAD_THREADS threads as soon as it is validated; wait
for the last upload; store annotations.json (detection sets), then manifest.json last, since a dataset
prefix without a manifest is an unfinished import. A failed import deletes everything under the prefix.
"""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from services.accuracy.dataset_import import normalize_dataset
from services.common.dataset_files import ANNOTATIONS, MANIFEST
from services.common.object_store import ObjectRef, ObjectStore
from services.common.progress import Report

UPLOAD_THREADS = 4


@dataclass(frozen=True)
class DatasetUpload:
    sources: list[ObjectRef]  # the uploaded files: one archive, or loose files
    file_names: list[str]  # the user's names for them (format hints only, never paths)
    format: str  # one of services.accuracy.formats.FORMATS, or "" to detect
    bucket: str  # where the dataset goes, under prefix (ends with "/")
    prefix: str


@dataclass(frozen=True)
class PublishedDataset:
    bucket: str
    prefix: str
    manifest: ObjectRef
    annotations: ObjectRef | None  # detection sets only
    summary: dict  # the fields of workbench.v1.DatasetSummary, by name


def publish_dataset(store: ObjectStore, upload: DatasetUpload, report: Report) -> PublishedDataset:
    """Import upload into its bucket and prefix (see the module docstring); report(stage, fraction, message)."""
    sources, names, bucket, prefix = upload.sources, upload.file_names, upload.bucket, upload.prefix
    with tempfile.TemporaryDirectory(prefix="dataset-") as tmp, ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        work = Path(tmp)
        local = [work / "sources" / f"{i:04d}{''.join(Path(name).suffixes[-2:]).lower()[:16]}"
                 for i, name in enumerate(names)]
        (work / "sources").mkdir()
        for i, (_, name) in enumerate(zip(store.get_files(list(zip(sources, local))), names)):
            report("download", i / len(sources), name)
        staging = work / "staging"
        staging.mkdir()
        uploads: list[Future] = []

        def upload_image(key: str, path: Path) -> None:
            store.put_file(bucket, key, path)
            path.unlink()

        def store_image(path: Path, file_name: str) -> None:
            # A hard link keeps the file for the upload thread whatever the reader does with it.
            staged = staging / file_name
            os.link(path, staged)
            uploads.append(pool.submit(upload_image, f"{prefix}images/{file_name}", staged))

        try:
            dataset = normalize_dataset(local, names, upload.format, work / "extract", store_image, report)
            for future in uploads:
                future.result()
            report("publish", 0.98, f"{len(dataset.images)} images stored")
            annotations = None
            if dataset.annotations is not None:
                annotations = store.put_bytes(bucket, prefix + ANNOTATIONS, json.dumps(dataset.annotations).encode())
            # The manifest goes last: a dataset prefix without one is an unfinished import.
            manifest = store.put_bytes(bucket, prefix + MANIFEST, json.dumps(dataset.manifest()).encode())
        except BaseException:
            for future in uploads:
                future.cancel()
            pool.shutdown(wait=True)
            store.delete_prefix(bucket, prefix)  # a failed import leaves no partial dataset
            raise
    return PublishedDataset(bucket, prefix, manifest, annotations, dataset.summary())
