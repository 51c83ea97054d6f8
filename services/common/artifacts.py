"""OpenVINO IRs in object storage: content-addressed upload, and download into a work folder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from services.common.object_store import ObjectRef, ObjectStore

_HASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class StoredIR:
    xml: ObjectRef
    bin: ObjectRef


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_key(*parts: str) -> str:
    """A key folder named by what went into making an artifact (input hashes, options, versions).

    OpenVINO numbers generated node names with a process-wide counter, so the same model saved
    twice differs byte for byte: artifacts are addressed by their inputs, not their bytes.
    """
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def upload_ir(store: ObjectStore, bucket: str, xml: Path, folder: str) -> StoredIR:
    """Store an IR under folder; when it is already there (same inputs), keep the stored one.

    The .bin goes first: an .xml visible under a key means its weights are already there.
    """
    bin_path = xml.with_suffix(".bin")
    bin_key, xml_key = f"{folder}/model.bin", f"{folder}/model.xml"
    if store.exists(bucket, xml_key):
        return StoredIR(store.stat(bucket, xml_key), store.stat(bucket, bin_key))
    bin_ref = store.put_file(bucket, bin_key, bin_path)
    xml_ref = store.put_file(bucket, xml_key, xml)
    return StoredIR(xml_ref, bin_ref)


def download_ir(store: ObjectStore, ir: StoredIR, folder: Path) -> Path:
    """Fetch an IR into folder, checking both files against their recorded hashes; returns the .xml path."""
    folder.mkdir(parents=True, exist_ok=True)
    xml = folder / "model.xml"
    store.get_file(ir.bin.bucket, ir.bin.key, xml.with_suffix(".bin"), expected_sha256=ir.bin.sha256 or None)
    store.get_file(ir.xml.bucket, ir.xml.key, xml, expected_sha256=ir.xml.sha256 or None)
    return xml
