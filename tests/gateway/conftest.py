import dataclasses

import pytest

from tests.conftest import new_database_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    """The catalog and job suite runs on both engines."""
    return new_database_url(request.param, request)


@pytest.fixture
def gateway_settings(s3_settings):
    """A gateway on a free port over this test's bucket, with no auth and a short grace."""
    return dataclasses.replace(s3_settings, listen="127.0.0.1:0", grace_seconds=1.0, log_format="text")
