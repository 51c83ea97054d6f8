"""The catalog database: SQLAlchemy engines for SQLite (the local default) and PostgreSQL, the schema,
transactions, and Alembic migrations.

Records are rows: the columns the gateway filters and sorts on, plus the record's protobuf message
(`body`, binary: parsing it is microseconds where JSON would be a millisecond per listed record).
Blobs stay in object storage; rows reference them by key and sha256 inside the message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from services.common.telemetry import metrics
from workbench_runtime.errors import Unavailable

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# any number will do: gateways starting together on one PostgreSQL take turns migrating
_MIGRATION_LOCK = 7_412_001

metadata = sa.MetaData()
_ID = sa.String(32)


def _record(name: str, *columns: sa.Column, indexes: tuple[tuple[str, ...], ...] = ()) -> sa.Table:
    table = sa.Table(name, metadata, sa.Column("id", _ID, primary_key=True), *columns,
                     sa.Column("body", sa.LargeBinary, nullable=False))
    for cols in indexes:
        sa.Index(f"ix_{name}_{'_'.join(cols)}", *[table.c[c] for c in cols])
    return table


models = _record("models")
datasets = _record("datasets")
projects = _record(
    "projects", sa.Column("parent_id", _ID), sa.Column("model_id", _ID), sa.Column("dataset_id", _ID),
    sa.Column("request_id", sa.String(128), unique=True),
    indexes=(("parent_id", "id"), ("model_id",), ("dataset_id",)))
uploads = _record("uploads", sa.Column("request_id", sa.String(128), unique=True))
reports = _record("reports", sa.Column("project_id", _ID, nullable=False), indexes=(("project_id", "id"),))
packages = _record("packages", sa.Column("project_id", _ID, nullable=False), indexes=(("project_id", "id"),))
jobs = _record(
    "jobs",
    sa.Column("kind", sa.Integer, nullable=False),
    sa.Column("state", sa.Integer, nullable=False),
    sa.Column("project_id", _ID),
    sa.Column("request_id", sa.String(128)),
    # the gateway request that started it, so any gateway can run (or resume) it
    sa.Column("request", sa.LargeBinary, nullable=False),
    sa.Column("owner", sa.String(64)),  # the gateway process holding the lease
    sa.Column("lease_until", sa.Float),  # epoch seconds; past it, another gateway may take the job over
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_sequence", sa.Integer, nullable=False, server_default="0"),
    # the worker service whose free slot the job waits for, if any (migration 0002)
    sa.Column("waiting_for", sa.String(32)),
    # the W3C traceparent of the request that submitted it, which its run continues (migration 0003)
    sa.Column("traceparent", sa.String(64)),
    sa.UniqueConstraint("kind", "request_id", name="uq_jobs_kind_request_id"),
    indexes=(("state", "id"), ("project_id", "id"), ("waiting_for", "id")))
job_events = sa.Table(
    "job_events", metadata,
    sa.Column("job_id", _ID, primary_key=True), sa.Column("sequence", sa.Integer, primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False))
# a finished step's output, so a resumed job skips what is already done
job_steps = sa.Table(
    "job_steps", metadata,
    sa.Column("job_id", _ID, primary_key=True), sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False))


def default_url() -> str:
    home = Path(os.environ.get("WORKBENCH_HOME", Path.home() / ".workbench"))
    return f"sqlite:///{home / 'catalog.db'}"


class Database:
    """One engine, its dialect's quirks handled, and short transactions that map outages to UNAVAILABLE."""

    def __init__(self, url: str = ""):
        url = url or default_url()
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        self.url = sa.engine.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if self.url.database:
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(self.url, connect_args={"timeout": 30})
            _sqlite_pragmas(self.engine)
        else:
            self.engine = sa.create_engine(
                self.url, pool_size=8, max_overflow=24, pool_pre_ping=True, pool_recycle=1800,
                connect_args={"connect_timeout": 5})
        metrics.time_statements(self.engine)
        # SQLite has one writer at a time: this process's writers queue here rather than spin on busy_timeout
        self._write_lock = threading.Lock() if self.is_sqlite else contextlib.nullcontext()

    @property
    def safe_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def migrate(self) -> None:
        """Bring the schema to the newest migration; safe to run from several processes at once."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin, each start
        with self.connect_raw() as connection:
            if not self.is_sqlite:
                connection.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
            try:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            finally:
                if not self.is_sqlite:
                    connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
                    connection.commit()

    @contextlib.contextmanager
    def connect_raw(self) -> Iterator[Connection]:
        with _unavailable_on_outage(), self.engine.connect() as connection:
            yield connection

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with metrics.db_transaction("read"), _unavailable_on_outage(), self.engine.connect() as connection, \
                connection.begin():
            yield connection

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction that changes rows: all of it is stored, or none of it.

        SQLite takes the write lock at BEGIN (IMMEDIATE), so two read-modify-writes never interleave;
        PostgreSQL callers lock the rows they change with SELECT ... FOR UPDATE.
        """
        with metrics.db_transaction("write"), _unavailable_on_outage(), self._write_lock, \
                self.engine.connect() as connection:
            connection.execution_options(sqlite_immediate=True)
            with connection.begin():
                yield connection

    def ping(self) -> None:
        with self.read() as connection:
            connection.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we say BEGIN ourselves (pysqlite's own is unreliable)
        cursor = dbapi_connection.cursor()
        # WAL: readers never wait for the writer; NORMAL is durable across process crashes in WAL mode
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        immediate = connection.get_execution_options().get("sqlite_immediate")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextlib.contextmanager
def _unavailable_on_outage() -> Iterator[None]:
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        # the driver's text names the host and the failure, never the password
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise Unavailable(f"the catalog database is unavailable: {detail}") from None
