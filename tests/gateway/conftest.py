import dataclasses

import pytest

from services.common.server import ServiceServer
from services.common.settings import Settings
from services.gateway.db import Database
from services.gateway.servicer import registrar
from tests.conftest import new_database_url
from workbench.client import WorkbenchClient


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    """The catalog and job suite runs on both engines."""
    return new_database_url(request.param, request)


@pytest.fixture
def gateway_settings(s3_settings):
    """A gateway on a free port over this test's bucket, with no auth and a short grace."""
    return dataclasses.replace(s3_settings, listen="127.0.0.1:0", grace_seconds=1.0, log_format="text")


def start_gateway(settings: Settings) -> tuple[ServiceServer, WorkbenchClient]:
    server = ServiceServer("gateway", settings, registrar(settings))
    server.start()
    return server, WorkbenchClient(server.address, token=settings.auth_token or None, timeout=20)


@pytest.fixture
def gateway(gateway_settings):
    """A serving gateway (no workers) and a client of it."""
    server, client = start_gateway(gateway_settings)
    yield client
    client.close()
    server.shutdown(grace=1)


@pytest.fixture
def database(database_url):
    """This test's catalog, migrated."""
    db = Database(database_url)
    db.migrate()
    yield db
    db.dispose()
