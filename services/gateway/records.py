"""Durable records (projects, jobs, uploads...) stored as protobuf JSON objects.

All gateway state lives in object storage so a restarted or second gateway sees the same
projects and jobs. Ids sort by creation time, so listing by key lists oldest first.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from typing import Callable, Generic, Iterator, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from services.common.errors import InvalidArgument, NotFound
from services.common.object_store import ObjectStore

M = TypeVar("M", bound=Message)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# \Z, not $: "$" also matches before a trailing newline, which would let "prj-...\n" through to a key
_ID = re.compile(r"^[a-z]{2,4}-[0-9a-f]{19}\Z")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")


def new_id(prefix: str) -> str:
    """Sortable id: milliseconds since the epoch, then randomness, e.g. prj-0194f1c2a3b5e8d7c6a."""
    return f"{prefix}-{int(time.time() * 1000):011x}{secrets.token_hex(4)}"


def validate_id(value: str, field: str, prefix: str) -> str:
    # Ids become object keys: anything but our own format is refused before it gets near one.
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if not _ID.match(value) or not value.startswith(prefix + "-"):
        raise InvalidArgument(f"{field} {value!r} is not a valid {prefix} id", field=field)
    return value


def validate_request_id(value: str) -> str:
    if value and not _REQUEST_ID.match(value):
        raise InvalidArgument("request_id must be 1-128 characters of [A-Za-z0-9._:-]", field="request_id")
    return value


def page_size_of(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def decode_page_token(token: str, prefix: str) -> str | None:
    if not token:
        return None
    try:
        last_id = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not one this service issued", field="page_token") from None
    return validate_id(last_id, "page_token", prefix)


class Records(Generic[M]):
    """One kind of record, one JSON object per record under `<folder>/<id>.json`."""

    def __init__(self, store: ObjectStore, bucket: str, folder: str, id_prefix: str, message: type[M]):
        self.store, self.bucket, self.folder, self.id_prefix, self.message = store, bucket, folder, id_prefix, message
        self.kind = folder.rstrip("s")

    def key(self, record_id: str) -> str:
        return f"{self.folder}/{record_id}.json"

    def new_id(self) -> str:
        return new_id(self.id_prefix)

    def put(self, record: M) -> M:
        doc = json_format.MessageToDict(record, preserving_proto_field_name=True)
        self.store.put_json(self.bucket, self.key(record.id), doc)  # type: ignore[attr-defined]
        return record

    def get(self, record_id: str, field: str) -> M:
        validate_id(record_id, field, self.id_prefix)
        if not self.store.exists(self.bucket, self.key(record_id)):
            raise NotFound(f"{self.kind} {record_id} not found", field=field)
        return self._load(record_id)

    def find(self, record_id: str) -> M | None:
        if not self.store.exists(self.bucket, self.key(record_id)):
            return None
        return self._load(record_id)

    def delete(self, record_id: str) -> None:
        self.store.delete(self.bucket, self.key(record_id))

    def list(
        self, page_size: int, page_token: str, keep: Callable[[M], bool] = lambda _: True
    ) -> tuple[list[M], str]:
        """A page of records in creation order, filtered by keep; returns (records, next_page_token)."""
        size = page_size_of(page_size)
        after = decode_page_token(page_token, self.id_prefix)
        page: list[M] = []
        for record in self.scan(after):
            if keep(record):
                page.append(record)
                if len(page) == size:
                    return page, encode_page_token(record.id)  # type: ignore[attr-defined]
        return page, ""

    def scan(self, after_id: str | None = None) -> Iterator[M]:
        start_after = self.key(after_id) if after_id else None
        for ref in self.store.iter_objects(self.bucket, self.folder + "/", start_after=start_after):
            if ref.key.endswith(".json"):
                record = self.find(ref.key[len(self.folder) + 1 : -len(".json")])
                if record is not None:  # deleted between list and get
                    yield record

    def _load(self, record_id: str) -> M:
        doc = self.store.get_json(self.bucket, self.key(record_id))
        return json_format.ParseDict(doc, self.message(), ignore_unknown_fields=True)


class RequestIndex:
    """request_id -> record id, so a retried create returns what the first attempt made."""

    def __init__(self, store: ObjectStore, bucket: str):
        self.store, self.bucket = store, bucket

    def _key(self, kind: str, request_id: str) -> str:
        return f"requests/{kind}/{request_id}.json"

    def lookup(self, kind: str, request_id: str) -> str | None:
        if not request_id or not self.store.exists(self.bucket, self._key(kind, request_id)):
            return None
        return self.store.get_json(self.bucket, self._key(kind, request_id))["id"]

    def remember(self, kind: str, request_id: str, record_id: str) -> None:
        if request_id:
            self.store.put_json(self.bucket, self._key(kind, request_id), {"id": record_id})
