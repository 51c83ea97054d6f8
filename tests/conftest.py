"""Shared fixtures: one real SeaweedFS for the whole session, a fresh bucket per test. What the benches set
up the same way (SeaweedFS, settings, the yolov4-tiny project) is in tests/harness.py, plain functions that
bench/harness.py calls too."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from services.common.object_store import ObjectStore
from services.common.server import ServiceServer
from services.common.settings import Settings
from services.gateway.servicer import registrar as gateway_registrar
from tests import harness
from tests.harness import tiny_project  # noqa: F401 (the tests that build a parent themselves import it from here)
from workbench.client import WorkbenchClient

S3_ACCESS_KEY = "workbench-test"


@pytest.fixture(scope="session", autouse=True)
def workbench_home(tmp_path_factory):
    """WORKBENCH_HOME in a temporary folder for the whole run, the processes tests start included: a gateway
    whose settings name no database keeps its catalog there, and no test may touch the user's ~/.workbench."""
    home, before = tmp_path_factory.mktemp("workbench-home"), os.environ.get("WORKBENCH_HOME")
    os.environ["WORKBENCH_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("WORKBENCH_HOME", None)
    else:
        os.environ["WORKBENCH_HOME"] = before


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A SeaweedFS S3 server on free loopback ports, with per-session credentials."""
    server = harness.start_seaweed(tmp_path_factory.mktemp("seaweed"), S3_ACCESS_KEY)
    yield server
    harness.stop_seaweed(server)


@pytest.fixture(scope="session")
def seaweed_store(seaweed) -> ObjectStore:
    store = ObjectStore(seaweed.endpoint, seaweed.access_key, seaweed.secret_key)
    yield store
    store.close()


@pytest.fixture
def bucket(seaweed_store) -> str:
    """A fresh, empty bucket for one test; deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    seaweed_store.ensure_bucket(name)
    yield name
    seaweed_store.delete_bucket(name)


@pytest.fixture
def store(seaweed_store, bucket) -> ObjectStore:
    """The session's ObjectStore; the `bucket` fixture has created this test's bucket."""
    return seaweed_store


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A real PostgreSQL 16 server (the pgserver wheel) for the session, on a unix socket."""
    import pgserver

    with harness.postgres_folder() as data:
        server = pgserver.get_server(data, cleanup_mode="stop")
        yield server
        server.cleanup()


def new_database_url(engine: str, request) -> str:
    """An empty catalog database on `engine` ("sqlite" or "postgresql") for one test."""
    if engine == "sqlite":
        return f"sqlite:///{request.getfixturevalue('tmp_path') / 'catalog.db'}"
    server = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:16]}"
    server.psql(f"CREATE DATABASE {name};")
    return server.get_uri(name)


@pytest.fixture
def database_url(request) -> str:
    """The local default engine; tests/gateway runs its suite on both engines."""
    return new_database_url("sqlite", request)


@pytest.fixture
def s3_settings(seaweed, bucket, database_url) -> Settings:
    """Settings pointing at the session SeaweedFS, this test's bucket and its own catalog database (derive
    others with dataclasses.replace)."""
    return harness.s3_settings(seaweed, bucket, database_url)


@dataclasses.dataclass
class Workbench:
    """Every service in-process on free ports, as a client sees them."""

    client: WorkbenchClient
    settings: Settings
    servers: dict[str, ServiceServer]


WORKERS = ("converter", "quantizer", "benchmark", "accuracy")


def start_services(settings: Settings, worker_settings: dict[str, Settings] | None = None,
                   gateway_overrides: dict | None = None) -> tuple[Settings, dict[str, ServiceServer]]:
    """The four workers (each with worker_settings[name] when given) and a gateway dialing them (its settings
    with gateway_overrides), in-process on the ports settings.listen asks for; returns the gateway's settings
    and the servers. When one fails to start, those already started are stopped."""
    servers: dict[str, ServiceServer] = {}
    try:
        for name in WORKERS:
            own = (worker_settings or {}).get(name, settings)
            # each worker's __main__ states what it serves: registrar = registrar_for(servicer, add_*, name)
            module = importlib.import_module(f"services.{name}.__main__")
            servers[name] = ServiceServer(name, own, module.registrar(own))
            servers[name].start()
            settings = dataclasses.replace(settings, **{f"{name}_addr": servers[name].address})
        settings = dataclasses.replace(settings, **(gateway_overrides or {}))
        servers["gateway"] = ServiceServer("gateway", settings, gateway_registrar(settings))
        servers["gateway"].start()
    except BaseException:
        stop_services(servers)
        raise
    return settings, servers


def stop_services(servers: dict[str, ServiceServer]) -> None:
    for server in servers.values():
        server.shutdown(grace=0)


@contextlib.contextmanager
def running_workbench(settings: Settings, worker_settings: dict[str, Settings] | None = None) -> Iterator[Workbench]:
    """start_services on free ports with a short grace and an internal token, and a client of its gateway;
    everything stopped on the way out."""
    settings = dataclasses.replace(settings, listen="127.0.0.1:0", grace_seconds=1.0, internal_token="internal")
    settings, servers = start_services(settings, {
        name: dataclasses.replace(own, listen="127.0.0.1:0", grace_seconds=1.0, internal_token="internal")
        for name, own in (worker_settings or {}).items()})
    client = WorkbenchClient(servers["gateway"].address, timeout=60)
    try:
        yield Workbench(client, settings, servers)
    finally:
        client.close()
        stop_services(servers)


FRAMES = sorted((Path(__file__).resolve().parents[1] / "data" / "vtest").glob("*.jpg"))[::5]  # 16 frames


@pytest.fixture
def workbench(s3_settings):
    """The four worker services and a gateway dialing them, sharing an internal token, on this test's bucket."""
    with running_workbench(s3_settings) as running:
        yield running


@pytest.fixture
def parent(workbench):
    """The real yolov4-tiny on 16 vtest frames, imported through the gateway: a project to optimize."""
    return tiny_project(workbench.client, FRAMES)
