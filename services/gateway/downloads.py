"""Downloads through the gateway: the objects it hands out to clients, streamed in chunks.

RenderReportImage, PreviewDataset, GetSweepChart and GetPackage answer with an ObjectRef and a presigned
URL; the URL names the object store's address (`minio:9000` in a cluster), which clients outside it, and
a web console allowed to reach only the gateway, cannot reach. ReadObject streams the same bytes through
the gateway instead.

Only what the gateway hands out may be read this way, so the RPC is no general window onto the store:
objects in the gateway's own bucket under these keys, as the services write them:

    datasets/<dataset>/renders/<name>.png    report pictures (the accuracy service's RenderImage)
    datasets/<dataset>/previews/<name>.png   dataset previews (the accuracy service's RenderDatasetPreview)
    sweeps/<sweep>/chart.png                 sweep charts (the benchmark service's Sweep)
    packages/<package>/<name>.tar.gz         deployment packages (services.gateway.packages)

Everything else (uploads, dataset images and annotations, models, report data, the staging prefix,
another bucket) is refused with PermissionDenied, a malformed key with InvalidArgument.
"""

from __future__ import annotations

import re
from typing import Iterator

from workbench_runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.common.object_store import MiB, ObjectReader, ObjectStore, StorageUnavailable, validate_key
from workbench.v1 import common_pb2

CHUNK_BYTES = 1 * MiB  # well under gRPC's 4 MiB default message limit

# what each kind of handed-out object looks like; keys are checked with validate_key first (no '..',
# empty segment, reserved prefix), so a segment here is one plain path component
HANDED_OUT: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("report pictures (datasets/<id>/renders/*.png)", re.compile(r"datasets/[^/]+/renders/[^/]+\.png")),
    ("dataset previews (datasets/<id>/previews/*.png)", re.compile(r"datasets/[^/]+/previews/[^/]+\.png")),
    ("sweep charts (sweeps/<id>/chart.png)", re.compile(r"sweeps/[^/]+/chart\.png")),
    ("deployment packages (packages/<id>/*.tar.gz)", re.compile(r"packages/[^/]+/[^/]+\.tar\.gz")),
)


class Download:
    """One open object: its size, then its bytes in chunks. Close it (or use `with`) to release the
    connection to the store, also when the client goes away mid-stream."""

    def __init__(self, reader: ObjectReader):
        self._reader = reader
        self.bucket, self.key, self.size = reader.ref.bucket, reader.ref.key, reader.ref.size

    def __iter__(self) -> Iterator[bytes]:
        """The object's bytes in order; at least one chunk (b"" for an empty object)."""
        sent = 0
        for chunk in self._reader:
            if chunk:
                sent += len(chunk)
                yield chunk
        if sent != self.size:
            raise StorageUnavailable(f"reading {self.key!r} from the object store ended after {sent} of "
                                     f"{self.size} bytes", reason="STORAGE_UNAVAILABLE")
        if not sent:
            yield b""

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "Download":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Downloads:
    def __init__(self, store: ObjectStore, bucket: str, chunk_bytes: int = CHUNK_BYTES):
        self.store, self.bucket, self.chunk_bytes = store, bucket, chunk_bytes

    def check(self, ref: common_pb2.ObjectRef) -> tuple[str, str]:
        """(bucket, key) of a readable object, or why it is not one (InvalidArgument, PermissionDenied)."""
        if not ref.bucket:
            raise InvalidArgument("object.bucket is required: pass the ObjectRef the gateway handed out",
                                  field="object.bucket", reason="INVALID_BUCKET")
        validate_key(ref.key, field="object.key")
        if ref.bucket != self.bucket:
            raise PermissionDenied(
                f"object.bucket {ref.bucket!r} is not the gateway's bucket: only objects the gateway hands out "
                "can be read through it", field="object.bucket", reason="NOT_DOWNLOADABLE")
        if not any(pattern.fullmatch(ref.key) for _, pattern in HANDED_OUT):
            kinds = ", ".join(kind for kind, _ in HANDED_OUT)
            raise PermissionDenied(
                f"object.key {ref.key!r} is not an object the gateway hands out; it serves only {kinds}",
                field="object.key", reason="NOT_DOWNLOADABLE")
        return ref.bucket, ref.key

    def open(self, ref: common_pb2.ObjectRef) -> Download:
        """Open a handed-out object for streaming. A missing object raises NotFound; a non-empty
        ref.sha256 that differs from the stored object's raises FailedPrecondition (it was replaced)."""
        bucket, key = self.check(ref)
        reader = self.store.get_stream(bucket, key, chunk_size=self.chunk_bytes)
        try:
            stored, wanted = reader.ref.sha256, ref.sha256.lower()
            if wanted and stored and wanted != stored:
                raise FailedPrecondition(
                    f"object {key!r} now has sha256 {stored}, not the {wanted} asked for: it was replaced; "
                    "ask for a fresh reference", field="object.sha256", reason="CHECKSUM_MISMATCH")
        except BaseException:
            reader.close()
            raise
        return Download(reader)
