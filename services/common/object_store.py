"""Object storage for every service: any S3 API (SeaweedFS locally, MinIO on Kubernetes) via the minio SDK.

Guarantees callers rely on:
  * Every object written here carries its SHA-256 as user metadata (x-amz-meta-sha256), so
    stat() and downloads can verify content without reading it twice.
  * Publishing is atomic: a reader never sees a half-written object under its final key.
    When the hash is known before the upload (bytes, files, or a caller-declared hash) the
    object goes straight to its key, as one PUT or one multipart upload, which S3 only makes
    visible on completion; the declared hash is checked at end of stream and a mismatch aborts
    the upload. Otherwise the data is staged under the reserved TMP_PREFIX and then
    server-side copied to its key with the hash it turned out to have.
  * Memory stays bounded: at most (parallel_uploads + 1) parts are held while uploading and
    downloads stream in chunks.
  * Transient failures (connection refused/reset, timeouts, HTTP 5xx, SlowDown) are retried per
    HTTP request with exponential backoff, a few times; auth and not-found errors never are.
  * Failures surface as workbench_runtime.errors classes with messages safe to show a client
    (endpoint, bucket, key and S3 error code; never the credentials).

A single PUT goes through the SDK's public put_object. Multipart uploads use its private
part-level calls instead (_create_multipart_upload, _upload_part, _complete_multipart_upload,
_abort_multipart_upload; minio==7.2.20 is pinned and tests/common/test_object_store.py pins their
signatures), because put_object's own multipart loop (7.2.20) cannot keep these guarantees:
  * abort only after every in-flight part has finished: it aborts while its pool still uploads;
  * fail fast: a failed part surfaces only after the whole stream has been read and sent to
    the pool (a 400 MiB stream was read to its end after the first part had failed);
  * no leak: when the stream fails, its pool's worker threads are never stopped (num_parallel_uploads
    threads left blocked per failed upload).
With num_parallel_uploads=1 it keeps them, but uploads one part at a time: about half the
throughput measured below (DEFAULT_PARALLEL_UPLOADS). It also assembles parts by `bytes +=`,
quadratic on streams that return small reads unless fed whole parts.
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import json
import os
import re
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, Sequence
from urllib.parse import parse_qs, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError

from services.common.telemetry import metrics, tracing
from workbench_runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    WorkbenchError,
)

if TYPE_CHECKING:
    from services.common.settings import Settings

# Staging area for uploads whose hash is not known up front; hidden from list(), refused as a key.
TMP_PREFIX = "_tmp/"
SHA256_HEADER = "x-amz-meta-sha256"
MiB = 1024 * 1024
# Loopback SeaweedFS, 100 MB, 2 shared cores: 4 parts of 8 MiB in flight ~150-190 MB/s (as fast as
# any setting tried, within noise); one part at a time ~70-120 MB/s. Memory: (4 + 1) x 8 MiB.
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_PARALLEL_UPLOADS = 4
DEFAULT_CHUNK_SIZE = 1 * MiB
MAX_KEY_BYTES = 1024  # S3's limit
MAX_SEGMENT_BYTES = 255  # SeaweedFS stores keys as filer paths: 255 bytes per path segment
_MIN_PART_SIZE = 5 * MiB  # S3 minimum for every part but the last
_MAX_PARTS = 10_000
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_AUTH_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
                         "ExpiredToken", "AuthorizationHeaderMalformed", "InvalidSecurity"})
_TRANSIENT_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                              "RequestTimeTooSkewed", "XMinioServerNotInitialized"})
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")


# ---- errors --------------------------------------------------------------------------------


class StorageError(WorkbenchError):
    """Base of every object-store failure; the second base of each subclass picks the gRPC status."""


class StorageUnavailable(StorageError, Unavailable):
    """The object store cannot be reached or keeps failing; retrying later may help."""


class StorageAuthError(StorageError, Unavailable):
    """The object store rejected our credentials: a deployment problem, not the client's."""


class BucketNotFound(StorageError, FailedPrecondition):
    """The bucket is missing: the store was not provisioned (ensure_bucket) for this service."""


class ObjectNotFound(StorageError, NotFound):
    """No object under this key."""


class ChecksumMismatch(StorageError, FailedPrecondition):
    """Content does not hash to the SHA-256 it was declared or stored with."""


class StorageRejected(StorageError, FailedPrecondition):
    """The store refused the request for another reason (its S3 error code is in the message)."""


# ---- values and validation -------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    """One stored object. sha256 is lowercase hex, or "" when unknown: listings do not carry
    user metadata, and objects written by others (e.g. through presigned_put) have none."""

    bucket: str
    key: str
    size: int
    sha256: str


def validate_bucket(bucket: str, field: str = "bucket") -> str:
    """S3 bucket naming rules (3-63 chars, lowercase letters, digits, '-' and '.')."""
    if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise InvalidArgument(f"invalid bucket name {bucket!r}", field=field, reason="INVALID_BUCKET")
    return bucket


def validate_key(key: str, field: str = "key") -> str:
    """Reject keys that could escape their prefix or upset S3/filer path handling.

    No empty key, leading '/', empty/'.'/'..' segments (so no trailing '/' either), backslashes,
    control characters, reserved prefix, or more than 1024 bytes (255 per segment)."""
    _check_path(key, field, what="key", allow_empty=False, allow_trailing_slash=False)
    return key


def validate_prefix(prefix: str, field: str = "prefix") -> str:
    """Like validate_key, but "" (everything) and a trailing '/' are allowed."""
    _check_path(prefix, field, what="prefix", allow_empty=True, allow_trailing_slash=True)
    return prefix


def _check_path(value: str, field: str, *, what: str, allow_empty: bool, allow_trailing_slash: bool) -> None:
    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f"invalid object {what} {value!r}: {why}", field=field, reason="INVALID_KEY")

    if not isinstance(value, str):
        raise InvalidArgument(f"object {what} must be a string", field=field, reason="INVALID_KEY")
    if not value:
        if allow_empty:
            return
        raise bad("empty")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad("not valid UTF-8") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise bad(f"longer than {MAX_KEY_BYTES} bytes")
    if value.startswith("/"):
        raise bad("starts with '/'")
    if "\\" in value:
        raise bad("contains a backslash")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise bad("contains a control character")
    if value.startswith(TMP_PREFIX):
        raise bad(f"the prefix {TMP_PREFIX!r} is reserved")
    body = value[:-1] if allow_trailing_slash and value.endswith("/") else value
    for segment in body.split("/"):
        if segment in ("", ".", ".."):
            raise bad("has an empty, '.' or '..' path segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise bad(f"has a path segment longer than {MAX_SEGMENT_BYTES} bytes")


def _check_sha256(value: str | None, field: str = "sha256") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256_RE.match(value.lower()):
        raise InvalidArgument("sha256 must be 64 hex digits", field=field, reason="INVALID_SHA256")
    return value.lower()


# ---- the store -----------------------------------------------------------------------------


class ObjectStore:
    """Thread-safe client for one S3 endpoint; share one per process."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        ca_file: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        parallel_uploads: int = DEFAULT_PARALLEL_UPLOADS,
        retries: int = 3,
        backoff: float = 0.2,
        connect_timeout: float = 3.0,
        read_timeout: float = 120.0,
        max_connections: int = 32,
    ):
        if part_size < _MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {_MIN_PART_SIZE}")
        self.endpoint = endpoint
        self.part_size = part_size
        self.parallel_uploads = max(1, parallel_uploads)
        retry = urllib3.Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            redirect=False,
            backoff_factor=backoff,
            backoff_max=5.0,
            status_forcelist=(500, 502, 503, 504),
            raise_on_status=False,  # hand the last 5xx to the SDK so its S3 code reaches our error message
        )
        tls: dict[str, Any] = {}
        if secure:
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_file or os.environ.get("SSL_CERT_FILE") or certifi.where()}
        self._http = _MeteredPool(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=max_connections,
            retries=retry,
            **tls,
        )
        # region given: the SDK never has to ask the server where a bucket lives
        self._client = Minio(endpoint, access_key, secret_key, secure=secure, region=region, http_client=self._http)

    @classmethod
    def from_settings(cls, settings: "Settings", **kwargs: Any) -> "ObjectStore":
        return cls(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key,
                   secure=settings.s3_secure, region=settings.s3_region, **kwargs)

    def __repr__(self) -> str:  # never show the credentials
        return f"ObjectStore(endpoint={self.endpoint!r})"

    @property
    def client(self) -> Minio:
        """The underlying SDK client, for the rare call this class does not wrap."""
        return self._client

    def close(self) -> None:
        self._http.clear()

    # ---- buckets ---------------------------------------------------------------------------

    def ensure_bucket(self, bucket: str) -> None:
        """Create the bucket unless it exists (safe to race with another process doing the same)."""
        validate_bucket(bucket)
        with self._mapped(bucket):
            if self._client.bucket_exists(bucket):
                return
            try:
                self._client.make_bucket(bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                return
            # SeaweedFS allocates a bucket's volumes on its first write (0.2 s): pay that here, when the bucket is
            # provisioned, rather than in the first user's upload
            probe = f"{TMP_PREFIX}provisioned"
            self._client.put_object(bucket, probe, io.BytesIO(b"\0"), 1)  # an empty object takes no volume
            self._client.remove_object(bucket, probe)

    def bucket_exists(self, bucket: str) -> bool:
        validate_bucket(bucket)
        with self._mapped(bucket):
            return self._client.bucket_exists(bucket)

    def delete_bucket(self, bucket: str) -> None:
        """Delete a bucket and everything in it (tests and local tooling; S3 refuses non-empty buckets)."""
        validate_bucket(bucket)
        with self._mapped(bucket):
            if not self._client.bucket_exists(bucket):
                return
            names = (o.object_name for o in self._client.list_objects(bucket, recursive=True) if not o.is_dir)
            self._delete_names(bucket, names)
            self._client.remove_bucket(bucket)

    # ---- writes ----------------------------------------------------------------------------

    def put_stream(
        self,
        bucket: str,
        key: str,
        stream: BinaryIO,
        length: int = -1,
        *,
        content_type: str = "application/octet-stream",
        sha256: str | None = None,
    ) -> ObjectRef:
        """Upload from any object with read(n); length=-1 when unknown.

        With `sha256` the object is uploaded straight to its key and the hash is checked at end
        of stream (ChecksumMismatch, nothing published). Without it the upload is staged under
        TMP_PREFIX and copied into place once its hash is known. Exceptions raised by the stream
        itself propagate unchanged, and nothing becomes visible under `key`."""
        validate_bucket(bucket)
        validate_key(key)
        expected = _check_sha256(sha256)
        if not isinstance(length, int) or length < -1:
            raise InvalidArgument("length must be -1 (unknown) or a byte count", field="length")
        reader = _HashingReader(stream, length, expected)
        try:
            if expected is not None:
                self._upload(bucket, key, reader, content_type, expected)
                return ObjectRef(bucket, key, reader.size, expected)
            return self._staged_upload(bucket, key, reader, content_type)
        except _SourceFailed as exc:
            raise exc.original from None

    def put_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectRef:
        return self.put_stream(bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                               sha256=hashlib.sha256(data).hexdigest())

    def put_file(self, bucket: str, key: str, path: Path | str, *, content_type: str = "application/octet-stream") -> ObjectRef:
        """Hash the file first (fast, local) so the upload can go straight to its key; a file that
        changes during the upload fails the check instead of publishing a torn object."""
        path = Path(path)
        digest = _hash_file(path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return self.put_stream(bucket, key, f, size, content_type=content_type, sha256=digest)

    def put_json(self, bucket: str, key: str, value: Any) -> ObjectRef:
        data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return self.put_bytes(bucket, key, data, content_type="application/json")

    # ---- reads -----------------------------------------------------------------------------

    def stat(self, bucket: str, key: str) -> ObjectRef:
        validate_bucket(bucket)
        validate_key(key)
        with self._mapped(bucket, key):
            st = self._client.stat_object(bucket, key)
        return ObjectRef(bucket, key, int(st.size or 0), _sha_from_headers(st.metadata))

    def exists(self, bucket: str, key: str) -> bool:
        """False for a missing object; a missing bucket still raises BucketNotFound."""
        try:
            self.stat(bucket, key)
            return True
        except ObjectNotFound:
            return False

    def get_stream(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> "ObjectReader":
        """Open an object for streaming; use as a context manager so the connection is released.

        `with store.get_stream(b, k) as r: for chunk in r: ...` (or r.read(n))."""
        validate_bucket(bucket)
        validate_key(key)
        if offset < 0 or (length is not None and length <= 0):
            raise InvalidArgument("offset must be >= 0 and length > 0", field="offset")
        with self._mapped(bucket, key):
            response = self._client.get_object(bucket, key, offset=offset, length=length or 0)
        return ObjectReader(self, response, bucket, key, chunk_size)

    def get_bytes(self, bucket: str, key: str, *, max_bytes: int | None = None) -> bytes:
        """Whole object in memory: only for objects known to be small; max_bytes guards that."""
        with self.get_stream(bucket, key) as r:
            if max_bytes is not None and r.ref.size > max_bytes:
                raise ResourceExhausted(f"object {key!r} is {r.ref.size} bytes, more than the {max_bytes} allowed here",
                                        reason="OBJECT_TOO_LARGE")
            return r.read()

    def get_json(self, bucket: str, key: str, *, max_bytes: int = 16 * MiB) -> Any:
        data = self.get_bytes(bucket, key, max_bytes=max_bytes)
        try:
            return json.loads(data)
        except ValueError:
            raise FailedPrecondition(f"object {key!r} in bucket {bucket!r} is not valid JSON", reason="CORRUPT_OBJECT") from None

    def get_file(self, bucket: str, key: str, path: Path | str, expected_sha256: str | None = None) -> ObjectRef:
        """Download to `path`, verifying the SHA-256 while streaming against `expected_sha256` and the
        hash stored with the object. The file appears at `path` only when complete and verified;
        on any failure the partial file is removed."""
        expected = _check_sha256(expected_sha256, field="expected_sha256")
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        digest = hashlib.sha256()
        size = 0
        try:
            with self.get_stream(bucket, key) as r, open(tmp, "wb") as out:
                for chunk in r:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                ref = r.ref
            actual = digest.hexdigest()
            if size != ref.size:
                raise StorageUnavailable(f"download of {key!r} from {self.endpoint} ended after {size} of {ref.size} bytes",
                                         reason="STORAGE_UNAVAILABLE")
            for label, want in (("expected", expected), ("stored", ref.sha256 or None)):
                if want is not None and want != actual:
                    raise ChecksumMismatch(
                        f"object {key!r} in bucket {bucket!r} has sha256 {actual}, but the {label} sha256 is {want}",
                        field="expected_sha256" if label == "expected" else None, reason="CHECKSUM_MISMATCH")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return ObjectRef(bucket, key, size, actual)

    def get_files(self, objects: Sequence[tuple[ObjectRef, Path]], *, at_once: int = 4) -> Iterator[Path]:
        """get_file for each (object, path) (hash-checked when the object's sha256 is known), at_once at a time:
        many small objects fetched one at a time each wait on a round trip. Yields the paths in the order given;
        a consumer that stops early (or fails) cancels the fetches not yet started."""
        with ThreadPoolExecutor(at_once, thread_name_prefix="s3-get") as pool:
            # in the caller's context: each fetch's S3 span belongs to the caller's trace
            fetches = [pool.submit(contextvars.copy_context().run, self.get_file, ref.bucket, ref.key, path,
                                   ref.sha256 or None) for ref, path in objects]
            try:
                for fetch, (_, path) in zip(fetches, objects):
                    fetch.result()
                    yield path
            finally:
                for fetch in fetches:
                    fetch.cancel()

    def list(self, bucket: str, prefix: str = "", *, start_after: str | None = None, limit: int | None = None) -> list[ObjectRef]:
        """Objects under `prefix` in key order, after `start_after`, at most `limit` of them.

        Page with start_after=<last key of the previous page>. sha256 is "" here: S3 listings do
        not return user metadata (stat() a key for its hash). Staged uploads are hidden."""
        if limit is not None and (not isinstance(limit, int) or limit <= 0):
            raise InvalidArgument("limit must be positive", field="limit")
        out: list[ObjectRef] = []
        for ref in self.iter_objects(bucket, prefix, start_after=start_after):
            out.append(ref)
            if limit is not None and len(out) >= limit:
                break
        return out

    def iter_objects(self, bucket: str, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectRef]:
        """Like list(), lazily: the store is asked for the next 1000 keys only when needed."""
        validate_bucket(bucket)
        validate_prefix(prefix)
        if start_after is not None and (not isinstance(start_after, str) or any(ord(c) < 0x20 for c in start_after)):
            raise InvalidArgument("invalid start_after", field="start_after")
        return self._iter_objects(bucket, prefix, start_after)

    def _iter_objects(self, bucket: str, prefix: str, start_after: str | None) -> Iterator[ObjectRef]:
        with self._mapped(bucket):
            for obj in self._client.list_objects(bucket, prefix=prefix or None, recursive=True, start_after=start_after):
                name = obj.object_name or ""
                if obj.is_dir or name.startswith(TMP_PREFIX):
                    continue
                yield ObjectRef(bucket, name, int(obj.size or 0), "")

    # ---- deletes ---------------------------------------------------------------------------

    def delete(self, bucket: str, key: str) -> None:
        """Idempotent, like S3: deleting a missing object succeeds."""
        validate_bucket(bucket)
        validate_key(key)
        with self._mapped(bucket, key):
            self._client.remove_object(bucket, key)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under a non-empty prefix; returns how many were deleted."""
        validate_bucket(bucket)
        validate_prefix(prefix)
        if not prefix:
            raise InvalidArgument("delete_prefix needs a non-empty prefix", field="prefix")
        with self._mapped(bucket):
            names = (o.object_name for o in self._client.list_objects(bucket, prefix=prefix, recursive=True)
                     if not o.is_dir)
            return self._delete_names(bucket, names)

    def purge_staged(self, bucket: str, older_than: timedelta = timedelta(hours=1)) -> int:
        """Remove staged uploads left behind by a process that died mid-put (housekeeping)."""
        validate_bucket(bucket)
        cutoff = datetime.now(timezone.utc) - older_than
        with self._mapped(bucket):
            names = (o.object_name for o in self._client.list_objects(bucket, prefix=TMP_PREFIX, recursive=True)
                     if not o.is_dir and o.last_modified is not None and o.last_modified < cutoff)
            return self._delete_names(bucket, names)

    # ---- presigned URLs --------------------------------------------------------------------

    def presigned_get(self, bucket: str, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        validate_bucket(bucket)
        validate_key(key)
        _check_expiry(expires)
        with self._mapped(bucket, key):
            return self._client.presigned_get_object(bucket, key, expires=expires)

    def presigned_put(self, bucket: str, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A URL anyone can PUT one object to. Such objects carry no stored sha256 (stat() shows "")."""
        validate_bucket(bucket)
        validate_key(key)
        _check_expiry(expires)
        with self._mapped(bucket, key):
            return self._client.presigned_put_object(bucket, key, expires=expires)

    # ---- internals -------------------------------------------------------------------------

    def _staged_upload(self, bucket: str, key: str, reader: "_HashingReader", content_type: str) -> ObjectRef:
        tmp = f"{TMP_PREFIX}{uuid.uuid4().hex}"
        self._upload(bucket, tmp, reader, content_type, None)  # on failure nothing was stored
        try:
            digest = reader.hexdigest()
            with self._mapped(bucket, key):
                # REPLACE: the copy gets the hash we just learned; copy_object switches to
                # multipart UploadPartCopy by itself above 5 GiB
                self._client.copy_object(bucket, key, CopySource(bucket, tmp),
                                         metadata={"Content-Type": content_type, "sha256": digest},
                                         metadata_directive=REPLACE)
            return ObjectRef(bucket, key, reader.size, digest)
        finally:
            with suppress(Exception):  # best effort; purge_staged() collects what is left
                self._client.remove_object(bucket, tmp)

    def _upload(self, bucket: str, key: str, reader: "_HashingReader", content_type: str, sha256: str | None) -> None:
        headers = {"Content-Type": content_type or "application/octet-stream"}
        if sha256:
            headers[SHA256_HEADER] = sha256
        part_size = self.part_size
        if reader.length > 0:  # keep within S3's 10,000 parts
            part_size = max(part_size, -(-reader.length // _MAX_PARTS))
        data = reader.read_part(part_size)
        if reader.eof:  # fits in one request: a single PUT, which is atomic
            with self._mapped(bucket, key):
                # a part size of at least the data: one part, which put_object sends as one PutObject
                self._client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=headers["Content-Type"],
                                        metadata={SHA256_HEADER: sha256} if sha256 else None,
                                        part_size=max(len(data), _MIN_PART_SIZE))
            return
        with self._mapped(bucket, key):
            upload_id = self._client._create_multipart_upload(bucket, key, dict(headers))
        try:
            etags = self._upload_parts(bucket, key, upload_id, reader, data, part_size)
            with self._mapped(bucket, key):
                self._client._complete_multipart_upload(bucket, key, upload_id,
                                                        [Part(n, etags[n]) for n in sorted(etags)])
        except BaseException:
            with suppress(Exception):
                self._client._abort_multipart_upload(bucket, key, upload_id)
            raise

    def _upload_parts(self, bucket: str, key: str, upload_id: str, reader: "_HashingReader",
                      first: bytes, part_size: int) -> dict[int, str]:
        """Upload parts with at most parallel_uploads in flight; returns part number -> etag."""
        etags: dict[int, str] = {}
        inflight: dict[Future, int] = {}

        def collect(done: set[Future]) -> None:
            for fut in done:
                number = inflight.pop(fut)
                with self._mapped(bucket, key):
                    etags[number] = fut.result()

        pool = ThreadPoolExecutor(self.parallel_uploads, thread_name_prefix="s3-part")
        try:
            number, data = 1, first
            while True:
                # in the caller's context: the part's S3 span belongs to the caller's trace
                fut = pool.submit(contextvars.copy_context().run, self._client._upload_part, bucket, key, data, None,
                                  upload_id, number)
                inflight[fut] = number
                data = b""  # drop our reference: the worker owns the part now
                if len(inflight) >= self.parallel_uploads:
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    collect(done)
                if reader.eof:
                    break
                data = reader.read_part(part_size)
                if not data:  # the stream ended exactly on a part boundary
                    break
                number += 1
                if number > _MAX_PARTS:
                    raise InvalidArgument(f"object is larger than {_MAX_PARTS} parts of {part_size} bytes", field="length")
            done, _ = wait(inflight)
            collect(done)
            return etags
        finally:
            # wait for in-flight parts either way, so an abort that follows really drops them all
            pool.shutdown(wait=True, cancel_futures=True)

    def _delete_names(self, bucket: str, names: Iterator[str]) -> int:
        count = 0
        batch: list[DeleteObject] = []

        def flush() -> None:
            nonlocal count
            if not batch:
                return
            for err in self._client.remove_objects(bucket, batch):  # lazy: iterating sends the request
                raise StorageRejected(f"could not delete {err.name!r} from bucket {bucket!r} ({err.code})",
                                      reason="STORAGE_REJECTED")
            count += len(batch)
            batch.clear()

        for name in names:
            batch.append(DeleteObject(name))
            if len(batch) >= 1000:
                flush()
        flush()
        return count

    def _bucket_missing(self, bucket: str) -> bool:
        try:
            return not self._client.bucket_exists(bucket)
        except Exception:
            return False

    @contextmanager
    def _mapped(self, bucket: str | None = None, key: str | None = None) -> Iterator[None]:
        """Translate SDK/transport exceptions into domain errors with client-safe messages."""
        try:
            yield
        except (WorkbenchError, _SourceFailed):
            raise
        except S3Error as exc:
            raise self._from_s3(exc, bucket, key) from exc
        except ServerError as exc:
            raise self._from_status(exc.status_code, f"HTTP {exc.status_code}") from exc
        except InvalidResponseError as exc:
            raise StorageUnavailable(f"object store at {self.endpoint} sent a response that is not S3 ({_status_of(exc)})",
                                     reason="STORAGE_UNAVAILABLE") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store at {self.endpoint} is unreachable ({_transport_reason(exc)})",
                                     reason="STORAGE_UNAVAILABLE") from exc

    def _from_s3(self, exc: S3Error, bucket: str | None, key: str | None) -> StorageError:
        code = exc.code or "UnknownError"
        if code in _AUTH_CODES:
            return StorageAuthError(f"object store at {self.endpoint} rejected the credentials ({code})",
                                    reason="STORAGE_AUTH")
        if code == "NoSuchBucket" or (code == "NoSuchKey" and bucket and self._bucket_missing(bucket)):
            # HEAD responses have no body, so the SDK reports a missing bucket as NoSuchKey: check
            return BucketNotFound(f"bucket {bucket!r} does not exist at object store {self.endpoint}",
                                  field="bucket", reason="BUCKET_NOT_FOUND")
        if code in ("NoSuchKey", "NoSuchObject"):
            return ObjectNotFound(f"object {key!r} not found in bucket {bucket!r}", field="key",
                                  reason="OBJECT_NOT_FOUND")
        status = getattr(exc.response, "status", 0) or 0
        if code in _TRANSIENT_CODES or status >= 500:
            return StorageUnavailable(f"object store at {self.endpoint} is failing ({code})", reason="STORAGE_UNAVAILABLE")
        return StorageRejected(f"object store at {self.endpoint} refused the request ({code})", reason="STORAGE_REJECTED")

    def _from_status(self, status: int, what: str) -> StorageError:
        if status >= 500:
            return StorageUnavailable(f"object store at {self.endpoint} is failing ({what})", reason="STORAGE_UNAVAILABLE")
        return StorageRejected(f"object store at {self.endpoint} refused the request ({what})", reason="STORAGE_REJECTED")


class ObjectReader:
    """An open download. Iterate for chunks or read(n); close (or use `with`) to release the connection."""

    def __init__(self, store: ObjectStore, response: Any, bucket: str, key: str, chunk_size: int):
        self._store = store
        self._response = response
        self._chunk_size = chunk_size
        headers = response.headers
        size = int(headers.get("Content-Length") or 0)
        content_range = headers.get("Content-Range")  # "bytes 0-99/1234" on ranged reads
        if content_range and "/" in content_range:
            with suppress(ValueError):
                size = int(content_range.rsplit("/", 1)[1])
        self.ref = ObjectRef(bucket, key, size, _sha_from_headers(headers))
        self.content_type: str = headers.get("Content-Type") or "application/octet-stream"

    def read(self, n: int = -1) -> bytes:
        with self._store._mapped(self.ref.bucket, self.ref.key):
            return self._response.read(None if n is None or n < 0 else n)

    def __iter__(self) -> Iterator[bytes]:
        with self._store._mapped(self.ref.bucket, self.ref.key):
            yield from self._response.stream(self._chunk_size)

    def close(self) -> None:
        with suppress(Exception):
            self._response.close()
            self._response.release_conn()

    def __enter__(self) -> "ObjectReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- helpers -------------------------------------------------------------------------------


class _SourceFailed(Exception):
    """Carries an exception raised by the caller's stream past our error mapping, unchanged."""

    def __init__(self, original: BaseException):
        super().__init__(str(original))
        self.original = original


class _HashingReader:
    """Reads whole parts from the caller's stream, hashing and counting on the way, and checks the
    declared length and hash when the stream ends, before the last part is sent."""

    def __init__(self, raw: BinaryIO, length: int, expected_sha256: str | None):
        if not callable(getattr(raw, "read", None)):
            raise InvalidArgument("stream must have a read() method", field="stream")
        self._raw = raw
        self.length = length
        self._expected = expected_sha256
        self._hash = hashlib.sha256()
        self.size = 0
        self.eof = False

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def read_part(self, n: int) -> bytes:
        if self.eof:
            return b""
        if self.length >= 0:
            n = min(n, self.length - self.size)
        chunks: list[bytes] = []
        got = 0
        while got < n:
            chunk = self._read(n - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._hash.update(data)
        self.size += got
        if got < n or (self.length >= 0 and self.size == self.length):
            self._finish()
        return data

    def _read(self, n: int) -> bytes:
        try:
            chunk = self._raw.read(n)
        except BaseException as exc:
            raise _SourceFailed(exc) from exc
        if chunk is None:
            chunk = b""
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise InvalidArgument("stream.read() must return bytes", field="stream")
        return bytes(chunk) if not isinstance(chunk, bytes) else chunk

    def _finish(self) -> None:
        self.eof = True
        if self.length >= 0:
            if self.size < self.length:
                raise InvalidArgument(f"stream ended after {self.size} bytes, but {self.length} were declared",
                                      field="length", reason="SHORT_STREAM")
            if self._read(1):
                raise InvalidArgument(f"stream has more than the {self.length} bytes declared", field="length",
                                      reason="LONG_STREAM")
        if self._expected is not None and self._expected != self.hexdigest():
            raise ChecksumMismatch(f"uploaded data has sha256 {self.hexdigest()}, but {self._expected} was declared",
                                   field="sha256", reason="CHECKSUM_MISMATCH")


class _MeteredPool(urllib3.PoolManager):
    """The SDK's HTTP client: every S3 request it sends is timed by operation (metrics) and, inside a
    trace, is a span of it. The time is to the response's headers: a download's body streams after."""

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any):
        operation = s3_operation(method, url, kw.get("headers"))
        span = tracing.child_span(f"S3 {operation}", **{"rpc.system": "aws-api", "rpc.service": "S3",
                                                        "rpc.method": operation})
        start, status = time.perf_counter(), None
        try:
            response = super().urlopen(method, url, redirect, **kw)
            status = response.status
            return response
        finally:
            metrics.s3_request(operation, status, time.perf_counter() - start)
            if span is not None:
                span.set_attribute("http.response.status_code", status or 0)
                span.end()


def s3_operation(method: str, url: str, headers: Any = None) -> str:
    """The S3 API operation an SDK request performs (PutObject, UploadPart, ListObjectsV2...), from its method,
    path and query: a label with a handful of values, whatever the keys."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    has_key = "/" in parts.path.strip("/")
    copy = bool(headers) and any(h.lower() == "x-amz-copy-source" for h in headers)
    if method == "GET":
        if "uploadId" in query:
            return "ListParts"
        if "location" in query:
            return "GetBucketLocation"
        return "GetObject" if has_key else "ListObjectsV2"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        if not has_key:
            return "CreateBucket"
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "Post"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    return method


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(DEFAULT_CHUNK_SIZE):
            h.update(chunk)
    return h.hexdigest()


def _sha_from_headers(headers: Any) -> str:
    value = (headers.get(SHA256_HEADER) if headers is not None else None) or ""
    return value.lower() if _SHA256_RE.match(value.lower()) else ""


def _check_expiry(expires: timedelta) -> None:
    if not isinstance(expires, timedelta) or not timedelta(seconds=1) <= expires <= timedelta(days=7):
        raise InvalidArgument("expiry must be between 1 second and 7 days", field="expires")


def _status_of(exc: InvalidResponseError) -> str:
    status = getattr(exc, "_code", None)
    return f"HTTP {status}" if status else "unexpected response"


def _transport_reason(exc: BaseException) -> str:
    """A short, credential-free description of why a connection failed."""
    reason: BaseException | None = exc
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        reason = exc.reason
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        text = str(reason).lower()
        return "connection refused" if "refused" in text else "cannot connect"
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
        return "connect timed out"
    if isinstance(reason, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(reason, urllib3.exceptions.ProtocolError):
        return "connection lost"
    if isinstance(reason, urllib3.exceptions.ResponseError):
        return "kept failing"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    return type(reason).__name__
