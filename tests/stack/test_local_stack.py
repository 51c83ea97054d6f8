"""`workbench up / status / down` as a user runs them: real processes, real SeaweedFS, free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.stack import free_ports

SERVICES = ["gateway", "converter", "quantizer", "benchmark", "accuracy"]


@pytest.fixture
def cli(tmp_path):
    ports = free_ports(6)
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_S3_PORT": str(ports[0])}
    env.update({f"WORKBENCH_{name.upper()}_PORT": str(port) for name, port in zip(SERVICES, ports[1:])})
    env["WORKBENCH_ADDRESS"] = f"127.0.0.1:{ports[1]}"

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "workbench.cli", "--json", *args],
            env=env, capture_output=True, text=True, timeout=180,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"workbench {' '.join(args)} failed: {result.stderr}")
        return result

    yield run
    run("down", check=False)


def test_up_status_down_keeps_data(cli, tmp_path):
    components = json.loads(cli("up").stdout)
    assert [c["name"] for c in components] == ["s3", *SERVICES]
    assert all(c["healthy"] for c in components)
    assert all(c["detail"] == "SERVING" for c in json.loads(cli("status").stdout))

    project = json.loads(cli("project", "create", "kept across restarts").stdout)
    cfg = Path(__file__).resolve().parents[2] / "data" / "darknet" / "yolov4-tiny.cfg"
    upload = json.loads(cli("upload", str(cfg), "--presigned").stdout)
    assert upload["state"] == "UPLOAD_STATE_READY" and int(upload["object"]["size"]) == cfg.stat().st_size

    cli("down")
    stopped = cli("status", check=False)
    assert stopped.returncode == 1
    assert not any(c["healthy"] for c in json.loads(stopped.stdout))

    cli("up")
    listed = json.loads(cli("project", "list").stdout)
    assert [p["id"] for p in listed] == [project["id"]]
    jobs = json.loads(cli("job", "list").stdout)
    assert [j["state"] for j in jobs] == ["JOB_STATE_SUCCEEDED"]
    # Credentials were made once and the S3 config is private to the user.
    assert oct((tmp_path / "home" / "stack.json").stat().st_mode & 0o777) == "0o600"


def test_cli_errors_are_one_line(cli):
    result = cli("project", "get", "not-an-id", check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
