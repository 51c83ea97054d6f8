"""Uploads: files entering the system, by presigned PUT or by a chunked stream through the gateway.

An upload's object key is built from its id only; the user's file name is kept in the record.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Iterable, Iterator

import sqlalchemy as sa

from workbench_runtime.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from services.common.object_store import ObjectStore
from services.gateway import db as schema
from services.gateway.db import Database
from services.gateway.jobs import JobContext, JobManager, LeaseLost, now
from services.gateway.records import Records, validate_request_id
from workbench.v1 import common_pb2, gateway_pb2

PRESIGN_EXPIRY = timedelta(hours=1)
_FILE_NAME = re.compile(r"^[^/\\\x00-\x1f]{1,255}\Z")  # \Z: "$" would let a trailing newline through
HASH_CHUNK = 8 * 1024 * 1024
# a streamed upload up to this size is held in memory, hashed, and stored with one PUT straight to its key;
# a larger one is staged by the store (PUT to a temporary key, COPY into place, DELETE: three round trips and
# a server-side copy of its bytes). Either way its key is its own and no record names it before it is stored.
BUFFERED_UPLOAD_BYTES = 32 * 1024 * 1024
VERIFY = common_pb2.JOB_KIND_VERIFY_UPLOAD


def validate_file_name(name: str) -> str:
    if not name or not _FILE_NAME.match(name) or name in (".", ".."):
        raise InvalidArgument("file_name must be a plain file name (no folders), 1-255 characters", field="file_name")
    return name


class Uploads:
    def __init__(self, database: Database, store: ObjectStore, bucket: str, jobs: JobManager, max_bytes: int):
        self.store, self.bucket, self.jobs, self.max_bytes = store, bucket, jobs, max_bytes
        self.records: Records[gateway_pb2.Upload] = Records(
            database, schema.uploads, "upl", gateway_pb2.Upload, lambda u: {"request_id": u.request_id or None})
        jobs.register(VERIFY, gateway_pb2.CompleteUploadRequest, self._verify)

    def object_key(self, upload_id: str) -> str:
        return f"uploads/{upload_id}/data"

    def _check_size(self, size: int) -> None:
        if size < 0:
            raise InvalidArgument("size must not be negative", field="size")
        if size > self.max_bytes:
            raise ResourceExhausted(f"upload of {size} bytes exceeds the limit of {self.max_bytes} bytes", field="size")

    def get(self, upload_id: str, field: str = "upload_id") -> gateway_pb2.Upload:
        return self.records.get(upload_id, field)

    def ready(self, upload_id: str, field: str) -> gateway_pb2.Upload:
        """An upload that imports may use: stored, sized and hashed."""
        upload = self.get(upload_id, field)
        if upload.state != gateway_pb2.UPLOAD_STATE_READY:
            raise FailedPrecondition(f"upload {upload.id} is not ready", field=field)
        return upload

    def create(self, file_name: str, size: int, request_id: str) -> tuple[gateway_pb2.Upload, str, timedelta]:
        """A pending upload and the presigned URL to PUT it to."""
        validate_file_name(file_name)
        self._check_size(size)
        validate_request_id(request_id)
        upload = self._for_request(request_id)
        if upload is None:
            upload = gateway_pb2.Upload(
                id=self.records.new_id(), file_name=file_name, state=gateway_pb2.UPLOAD_STATE_PENDING,
                create_time=now(), request_id=request_id,
            )
            upload.object.bucket, upload.object.key, upload.object.size = self.bucket, self.object_key(upload.id), size
            upload = self._insert(upload)
        url = self.store.presigned_put(self.bucket, upload.object.key, PRESIGN_EXPIRY)
        return upload, url, PRESIGN_EXPIRY

    def _for_request(self, request_id: str) -> gateway_pb2.Upload | None:
        return self.records.find(request_id=request_id) if request_id else None

    def _insert(self, upload: gateway_pb2.Upload) -> gateway_pb2.Upload:
        try:
            return self.records.insert(upload)
        except sa.exc.IntegrityError:  # the same request_id raced in through another call or gateway
            existing = self._for_request(upload.request_id)
            if existing is None:
                raise
            return existing

    def complete(self, upload_id: str) -> common_pb2.Job:
        """Start the job that sizes and hashes what the client PUT."""
        upload = self.get(upload_id)
        if not self.store.exists(self.bucket, upload.object.key):
            raise FailedPrecondition(f"nothing was PUT to the URL of upload {upload_id} yet", field="upload_id")

        def verifying(upload: gateway_pb2.Upload) -> None:
            if upload.state != gateway_pb2.UPLOAD_STATE_PENDING:  # checked under the row lock: one job per upload
                raise FailedPrecondition(f"upload {upload_id} is {gateway_pb2.UploadState.Name(upload.state)}, "
                                         "not PENDING", field="upload_id")
            upload.state = gateway_pb2.UPLOAD_STATE_VERIFYING

        with self.records.db.write() as tx:
            self.records.update(upload_id, "upload_id", verifying, tx)
            job = self.jobs.submit(VERIFY, gateway_pb2.CompleteUploadRequest(upload_id=upload_id), tx=tx)
        self.jobs.wake()  # committed now: this gateway claims it at once, not at its next look
        return job

    def _verify(self, ctx: JobContext, request: gateway_pb2.CompleteUploadRequest) -> common_pb2.JobOutput:
        upload = self.get(request.upload_id)
        try:
            stat = self.store.stat(self.bucket, upload.object.key)
            declared = upload.object.size
            self._check_size(stat.size)
            if declared and stat.size != declared:
                raise InvalidArgument(f"uploaded {stat.size} bytes but {declared} were declared", field="size")
            digest, done = hashlib.sha256(), 0
            with self.store.get_stream(self.bucket, upload.object.key) as chunks:
                for chunk in chunks:
                    ctx.check_cancelled()
                    digest.update(chunk)
                    done += len(chunk)
                    ctx.progress("hashing", done / max(stat.size, 1), f"{done} of {stat.size} bytes")
            upload.object.size, upload.object.sha256 = stat.size, digest.hexdigest()
            upload.state = gateway_pb2.UPLOAD_STATE_READY
            self.records.put(upload)
            return common_pb2.JobOutput(upload_id=upload.id)
        except LeaseLost:  # handed over to another gateway, which goes on verifying
            raise
        except BaseException as exc:
            # A rejected upload leaves nothing behind but its record, which says why.
            self.store.delete(self.bucket, upload.object.key)
            upload.state = gateway_pb2.UPLOAD_STATE_FAILED
            upload.error = getattr(exc, "message", "verification failed")
            self.records.put(upload)
            raise

    def receive(self, requests: Iterator[gateway_pb2.UploadFileRequest]) -> gateway_pb2.Upload:
        """Store a client-streamed file: a header message, then chunks."""
        first = next(requests, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("the first message must be the header", field="header")
        header = first.header
        validate_file_name(header.file_name)
        self._check_size(header.size)
        validate_request_id(header.request_id)
        existing = self._for_request(header.request_id)
        if existing:
            return existing
        upload = gateway_pb2.Upload(id=self.records.new_id(), file_name=header.file_name, create_time=now(),
                                    request_id=header.request_id)
        ref = self._store_stream(self.object_key(upload.id), _ChunkReader(requests, self.max_bytes))
        if header.size and ref.size != header.size:
            self.store.delete(self.bucket, ref.key)
            raise InvalidArgument(f"received {ref.size} bytes but the header declared {header.size}", field="size")
        upload.state = gateway_pb2.UPLOAD_STATE_READY
        upload.object.bucket, upload.object.key = ref.bucket, ref.key
        upload.object.size, upload.object.sha256 = ref.size, ref.sha256
        stored = self._insert(upload)
        if stored.id != upload.id:  # a retry of the same request won the race: its copy is the one kept
            self.store.delete(self.bucket, ref.key)
        return stored

    def _store_stream(self, key: str, reader: "_ChunkReader"):
        """Store what the client streams under key: hashed in memory and PUT once when it is small enough,
        staged by the store otherwise."""
        head = reader.read(BUFFERED_UPLOAD_BYTES + 1)
        if len(head) <= BUFFERED_UPLOAD_BYTES:
            return self.store.put_bytes(self.bucket, key, head)
        return self.store.put_stream(self.bucket, key, _Prefixed(head, reader))


class _Prefixed:
    """A reader that gives head first, then the rest of reader."""

    def __init__(self, head: bytes, reader: "_ChunkReader"):
        self._head, self._reader = memoryview(head), reader

    def read(self, size: int = -1) -> bytes:
        if self._head.nbytes:
            if size < 0:
                data = bytes(self._head) + self._reader.read()
                self._head = memoryview(b"")
                return data
            data = bytes(self._head[:size])
            self._head = self._head[size:]
            return data
        return self._reader.read(size)


class _ChunkReader:
    """A file-like view of a request stream's chunks, refusing more than max_bytes."""

    def __init__(self, requests: Iterable[gateway_pb2.UploadFileRequest], max_bytes: int):
        self._requests, self._max, self._buffer, self._total = iter(requests), max_bytes, bytearray(), 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            message = next(self._requests, None)
            if message is None:
                break
            if not message.HasField("chunk"):
                raise InvalidArgument("only chunks may follow the header", field="chunk")
            self._total += len(message.chunk)
            if self._total > self._max:
                raise ResourceExhausted(f"upload exceeds the limit of {self._max} bytes", field="chunk")
            self._buffer += message.chunk
        if size < 0 or size > len(self._buffer):
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data
