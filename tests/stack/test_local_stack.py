"""`workbench-dev up / status / down` as a user runs them: real processes, real SeaweedFS, free ports."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from services.common.seaweed import LOG_FILE
from services.stack import LocalStack, free_ports
from workbench.client import WorkbenchClient

SERVICES = ["gateway", "converter", "quantizer", "benchmark", "accuracy"]


@pytest.fixture
def cli(tmp_path):
    ports = free_ports(13)
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_S3_PORT": str(ports[0]),
           "WORKBENCH_WEB_PORT": str(ports[6])}
    env.update({f"WORKBENCH_{name.upper()}_PORT": str(port) for name, port in zip(SERVICES, ports[1:])})
    env.update({f"WORKBENCH_{name.upper()}_METRICS_PORT": str(port)
                for name, port in zip([*SERVICES, "web"], ports[7:])})
    env["WORKBENCH_ADDRESS"] = f"127.0.0.1:{ports[1]}"

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        # the local stack is the services' `workbench-dev`; the API commands are the SDK's `workbench`
        module = "services.dev" if args[0] in ("up", "down", "status") else "workbench.cli"
        result = subprocess.run(
            [sys.executable, "-m", module, "--json", *args],
            env=env, capture_output=True, text=True, timeout=180,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"workbench {' '.join(args)} failed: {result.stderr}")
        return result

    yield run
    run("down", check=False)


def test_up_status_down_keeps_data(cli, tmp_path):
    components = json.loads(cli("up").stdout)
    assert [c["name"] for c in components] == ["s3", *SERVICES, "web"]
    assert all(c["healthy"] for c in components)
    assert all(c["detail"] == "SERVING" for c in json.loads(cli("status").stdout))
    # each process serves its Prometheus metrics on its own port, which status shows
    endpoints = {c["name"]: c["metrics"] for c in components if c["name"] != "s3"}
    assert len(set(endpoints.values())) == len(SERVICES) + 1
    for name, url in endpoints.items():
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert "process_cpu_seconds_total" in text, name
        if name != "web":  # the probes' health checks went through the RPC interceptor
            assert 'workbench_rpc_requests_total{code="OK",method="Check",service="grpc.health.v1.Health"}' in text, name

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


# `down` of an idle stack takes ~2 s (the services together ~0.9 s, then SeaweedFS: a 1 s grace, SIGKILL,
# fsync). The bound leaves room for a loaded 2-core machine; the old graceful wait took ~16 s.
DOWN_BOUND_S = 6.0


@pytest.fixture
def stack(tmp_path):
    stack = LocalStack(tmp_path / "home", free_ports=True)
    try:
        yield stack
    finally:
        stack.kill()  # whatever a failed test left running


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def timed_down(stack: LocalStack) -> float:
    started = time.monotonic()
    stack.down()
    return time.monotonic() - started


def test_down_is_quick(stack):
    stack.up()
    took = timed_down(stack)
    assert took < DOWN_BOUND_S, f"`down` took {took:.1f}s"
    assert not any(c.healthy for c in stack.status())
    for name in ("gateway", "converter", "quantizer", "benchmark", "accuracy"):
        assert stack.pid(name) is None


def test_writes_made_just_before_down_survive_down_and_up(stack):
    """`down` SIGKILLs SeaweedFS after a short grace: what S3 and the gateway acknowledged the moment
    before must still be there after `up`."""
    stack.up()
    store = stack.object_store()
    small, large, staged = os.urandom(1000), os.urandom(12 * 1024 * 1024), os.urandom(300_000)
    store.ensure_bucket("made-just-before-down")  # a bucket made just before, too
    store.put_bytes("made-just-before-down", "small", small)
    store.put_bytes("made-just-before-down", "large", large)  # several chunks, a multipart upload
    # without a hash: staged under a temporary key, then copied into place and the staging deleted
    store.put_stream("workbench", "kept/staged", io.BytesIO(staged), len(staged))
    store.close()
    with WorkbenchClient(stack.address(), timeout=60) as client:
        project = client.create_project("made just before down")
    took = timed_down(stack)  # at once: no pause for anything to settle
    assert took < DOWN_BOUND_S, f"`down` took {took:.1f}s"
    # the S3 server really was killed: its filer never shut down (the graceful path would have closed
    # its store and volumes first, and this test would prove nothing about the fast one)
    last_run = (stack.s3_dir / LOG_FILE).read_text(errors="replace").rsplit("--- starting:", 1)[1]
    assert "Shutting down filer" not in last_run, "SeaweedFS exited gracefully: the SIGKILL path went untested"

    stack.up()
    store = stack.object_store()
    try:
        assert store.get_bytes("made-just-before-down", "small") == small
        assert sha256(store.get_bytes("made-just-before-down", "large")) == sha256(large)
        assert store.get_bytes("workbench", "kept/staged") == staged
        # the deletion of the staged copy was kept too
        assert list(store.client.list_objects("workbench", prefix="_tmp/", recursive=True)) == []
        assert sorted(o.key for o in store.iter_objects("made-just-before-down", "")) == ["large", "small"]
    finally:
        store.close()
    with WorkbenchClient(stack.address(), timeout=60) as client:
        assert client.get_project(project.id).name == "made just before down"
        assert [p.id for p in client.list_projects()] == [project.id]
    assert timed_down(stack) < DOWN_BOUND_S
