"""Durable records (projects, models, jobs, uploads...) as rows of the catalog database.

Each kind of record is a table: the columns the gateway filters on, plus the protobuf message.
Ids sort by creation time, so pages are walked by id, newest first unless asked otherwise (keyset
pagination: the cost of a page does not grow with the number of records before it).
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
import threading
import time
from typing import Callable, Generic, Iterator, TypeVar

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.engine import Connection

from workbench_runtime.errors import InvalidArgument, NotFound
from services.gateway.db import Database

M = TypeVar("M", bound=Message)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# \Z, not $: "$" also matches before a trailing newline, which would let "prj-...\n" through
_ID = re.compile(r"^[a-z]{2,4}-[0-9a-f]{19}\Z")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")


_last_id = [0, 0]  # the last id's (milliseconds, random part), so one process's ids always increase
_id_lock = threading.Lock()


def new_id(prefix: str) -> str:
    """Sortable id: milliseconds since the epoch, then randomness, e.g. prj-0194f1c2a3b5e8d7c6a. Within one
    millisecond (or a clock step back) the last id's random part plus one follows, as monotonic ULIDs do, so
    records made one after the other list newest first."""
    with _id_lock:
        millis, random = int(time.time() * 1000), secrets.randbits(32)
        if millis <= _last_id[0]:
            millis, random = _last_id[0], _last_id[1] + 1
            if random > 0xFFFFFFFF:
                millis, random = millis + 1, 0
        _last_id[:] = millis, random
    return f"{prefix}-{millis:011x}{random:08x}"


def derived_id(prefix: str, job_id: str) -> str:
    """The id of the one record a job makes: the same on every attempt of the job, so a resumed job
    cannot make a second one."""
    return f"{prefix}-{job_id.partition('-')[2]}"


def validate_id(value: str, field: str, prefix: str) -> str:
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
    """One kind of record: a table whose `body` is the message and whose other columns come from it."""

    def __init__(self, db: Database, table: sa.Table, id_prefix: str, message: type[M],
                 columns: Callable[[M], dict] = lambda _: {}):
        self.db, self.table, self.id_prefix, self.message, self.columns = db, table, id_prefix, message, columns
        self.kind = table.name.rstrip("s")

    def new_id(self) -> str:
        return new_id(self.id_prefix)

    @contextlib.contextmanager
    def _using(self, tx: Connection | None, write: bool) -> Iterator[Connection]:
        if tx is not None:
            yield tx
        else:
            with self.db.write() if write else self.db.read() as connection:
                yield connection

    def _row(self, record: M) -> dict:
        return {"id": record.id, "body": record.SerializeToString(), **self.columns(record)}  # type: ignore[attr-defined]

    def _parse(self, body: bytes) -> M:
        return self.message.FromString(body)

    def insert(self, record: M, tx: Connection | None = None) -> M:
        """Add a new record; a unique column already taken (a request_id) raises sqlalchemy's IntegrityError."""
        with self._using(tx, write=True) as connection:
            connection.execute(self.table.insert().values(**self._row(record)))
        return record

    def put(self, record: M, tx: Connection | None = None) -> M:
        """Store a record, new or changed."""
        row = self._row(record)
        with self._using(tx, write=True) as connection:
            changed = connection.execute(self.table.update().where(self.table.c.id == row["id"]).values(**row))
            if not changed.rowcount:
                connection.execute(self.table.insert().values(**row))
        return record

    def update(self, record_id: str, field: str, change: Callable[[M], None], tx: Connection | None = None) -> M:
        """Read, change and store a record in one transaction, the row locked: racing updates both land."""
        with self._using(tx, write=True) as connection:
            record = self._get(connection, record_id, field, lock=True)
            change(record)
            connection.execute(self.table.update().where(self.table.c.id == record_id).values(**self._row(record)))
        return record

    def get(self, record_id: str, field: str, tx: Connection | None = None) -> M:
        validate_id(record_id, field, self.id_prefix)
        with self._using(tx, write=False) as connection:
            return self._get(connection, record_id, field)

    def _get(self, connection: Connection, record_id: str, field: str, lock: bool = False) -> M:
        query = sa.select(self.table.c.body).where(self.table.c.id == record_id)
        body = connection.execute(query.with_for_update() if lock else query).scalar()
        if body is None:
            raise NotFound(f"{self.kind} {record_id} not found", field=field)
        return self._parse(body)

    def find(self, tx: Connection | None = None, **where) -> M | None:
        """The newest record whose columns equal `where`, or None."""
        with self._using(tx, write=False) as connection:
            query = self._where(sa.select(self.table.c.body), where).order_by(self.table.c.id.desc()).limit(1)
            body = connection.execute(query).scalar()
        return None if body is None else self._parse(body)

    def ids(self, limit: int = 10, tx: Connection | None = None, **where) -> list[str]:
        """Up to `limit` ids of records whose columns equal `where`, oldest first."""
        with self._using(tx, write=False) as connection:
            query = self._where(sa.select(self.table.c.id), where).order_by(self.table.c.id).limit(limit)
            return list(connection.execute(query).scalars())

    def delete(self, record_id: str, tx: Connection | None = None) -> None:
        with self._using(tx, write=True) as connection:
            connection.execute(self.table.delete().where(self.table.c.id == record_id))

    def list(self, page_size: int, page_token: str, newest_first: bool = True, **where) -> tuple[list[M], str]:
        """A page of records whose columns equal `where` (None: any), newest first (or oldest first);
        returns (records, next_page_token), the token empty on the last page."""
        size = page_size_of(page_size)
        after = decode_page_token(page_token, self.id_prefix)
        query = self._where(sa.select(self.table.c.id, self.table.c.body), where)
        if after:
            query = query.where(self.table.c.id < after if newest_first else self.table.c.id > after)
        order = self.table.c.id.desc() if newest_first else self.table.c.id
        # one more than a page tells whether another page follows
        with self.db.read() as connection:
            rows = connection.execute(query.order_by(order).limit(size + 1)).all()
        page = [self._parse(row.body) for row in rows[:size]]
        return page, encode_page_token(rows[size - 1].id) if len(rows) > size else ""

    def _where(self, query, where: dict):
        for column, value in where.items():
            if value is not None:
                query = query.where(self.table.c[column] == value)
        return query

