"""Shared fixtures: one real SeaweedFS for the whole session, a fresh bucket per test."""

from __future__ import annotations

import dataclasses
import importlib
import secrets
import uuid

import pytest

from services.common.object_store import ObjectStore
from services.common.seaweed import SeaweedServer
from services.common.server import ServiceServer
from services.common.settings import Settings
from services.gateway.servicer import registrar as gateway_registrar
from workbench.client import WorkbenchClient

S3_ACCESS_KEY = "workbench-test"


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A SeaweedFS S3 server on free loopback ports, with per-session credentials."""
    server = SeaweedServer.start(
        tmp_path_factory.mktemp("seaweed"), 0, S3_ACCESS_KEY, secrets.token_hex(16), ready_timeout=90
    )
    yield server
    server.stop(timeout=1)  # a graceful SeaweedFS exit takes ~16 s; SIGKILL loses nothing here


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


@pytest.fixture
def s3_settings(seaweed, bucket) -> Settings:
    """Settings pointing at the session SeaweedFS and this test's bucket (derive others with dataclasses.replace)."""
    return Settings.from_env(
        {},
        s3_endpoint=seaweed.endpoint,
        s3_access_key=seaweed.access_key,
        s3_secret_key=seaweed.secret_key,
        bucket=bucket,
    )


@dataclasses.dataclass
class Workbench:
    """Every service in-process on free ports, as a client sees them."""

    client: WorkbenchClient
    settings: Settings
    servers: dict[str, ServiceServer]


@pytest.fixture
def workbench(s3_settings):
    """The four worker services and a gateway dialing them, sharing an internal token, on this test's bucket."""
    settings = dataclasses.replace(s3_settings, listen="127.0.0.1:0", grace_seconds=1.0, internal_token="internal")
    servers = {}
    for name in ("converter", "quantizer", "benchmark", "accuracy"):
        module = importlib.import_module(f"services.{name}.__main__")
        register = module.registrar(settings) if hasattr(module, "registrar") else module.register
        servers[name] = ServiceServer(name, settings, register)
        servers[name].start()
        settings = dataclasses.replace(settings, **{f"{name}_addr": servers[name].address})
    servers["gateway"] = ServiceServer("gateway", settings, gateway_registrar(settings))
    servers["gateway"].start()
    client = WorkbenchClient(servers["gateway"].address, timeout=60)
    yield Workbench(client, settings, servers)
    client.close()
    for server in servers.values():
        server.shutdown(grace=0)
