"""The image built for real and the dev overlay run as containers (deploy/containers), with the demo's flow through
them: the only test that runs deploy/Dockerfile and the manifests' settings rather than reading them.

It runs the scripts as a person would (`python deploy/containers/stack.py up|flow|down`, JSON on the last line)
and then looks at the containers with podman. Images are reused while their inputs are unchanged (content-hash
tags), so only the first run on a machine builds them (a few minutes). Needs podman, runc and mmdebstrap, as root
(.ci/run installs them): without them it is skipped on a workstation and fails in CI, as the manifest checks do
without kubectl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.deploy.conftest import REPO, in_ci

CONTAINERS = REPO / "deploy" / "containers"
sys.path.insert(0, str(CONTAINERS))
import engine  # noqa: E402 (deploy/containers is not a package: its scripts import each other by name)
import stack as runner  # noqa: E402

# the workloads of the dev overlay with the SeaweedFS component, and the user each runs as
EXPECTED = {"gateway": 10001, "converter": 10001, "quantizer": 10001, "benchmark": 10001, "accuracy": 10001,
            "web": 10001, "seaweedfs": 1000, "postgres": 999}
pytestmark = pytest.mark.timeout(1800)  # a first build on a fresh machine takes minutes


def script(*args: str, timeout: float) -> dict:
    """Runs deploy/containers/stack.py; its last line of output, as JSON. Fails with its error output."""
    result = subprocess.run([sys.executable, str(CONTAINERS / "stack.py"), *args], capture_output=True, text=True,
                            timeout=timeout, cwd=REPO)
    assert result.returncode == 0, f"stack.py {' '.join(args)} failed:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stack():
    missing = engine.missing_tools()
    problem = f"{', '.join(missing)} not installed: {engine.INSTALL_HINT}" if missing else ""
    if not problem and os.geteuid() != 0:
        problem = "they run with rootful podman (the manifests' users and fsGroup ownership): run as root"
    if problem:
        if in_ci():
            pytest.fail(f"the containers cannot be built or run: {problem}, and CI is set", pytrace=False)
        pytest.skip(f"the containers cannot be built or run: {problem}")
    try:
        figures = script("up", timeout=1700)
        yield figures
    finally:
        script("down", timeout=300)


def inspect(name: str) -> dict:
    return json.loads(engine.podman("inspect", name))[0]


def test_every_part_comes_up_healthy(stack):
    """up returns only once every probe passed; here: each workload is a running container, and the figures a
    bench reads are there."""
    assert stack["containers"] == sorted(f"workbench-{name}" for name in EXPECTED)
    for name in stack["containers"]:
        assert inspect(name)["State"]["Status"] == "running", name
    assert 0 < stack["cold_start_s"] < 300
    assert stack["image_size_bytes"] > 100e6


@pytest.mark.parametrize("workload", sorted(EXPECTED))
def test_runs_as_its_non_root_user_on_a_read_only_root(stack, workload):
    name = f"workbench-{workload}"
    details = inspect(name)
    uid = EXPECTED[workload]
    assert details["Config"]["User"] == f"{uid}:{uid}"
    assert details["HostConfig"]["ReadonlyRootfs"] is True
    # and inside: the processes' ids, no capability, a root filesystem that refuses writes, a writable /tmp
    status = engine.podman("exec", name, "cat", "/proc/1/status")
    ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines() if line.startswith(("Uid", "Gid"))}
    assert ids["Uid"] == [str(uid)] * 4 and ids["Gid"] == [str(uid)] * 4, status
    assert "CapEff:\t0000000000000000" in status
    probe = subprocess.run(["podman", "exec", name, "sh", "-c", "touch /probe; touch /tmp/probe && echo tmp ok"],
                           capture_output=True, text=True, env=engine.environment())
    assert "Read-only file system" in probe.stderr and "tmp ok" in probe.stdout, probe


def test_the_flow_through_the_gateway_makes_a_real_child_benchmarks_and_report(stack):
    flow = script("flow", timeout=900)
    assert flow["parent_fps"] > 0 and flow["int8_fps"] > 0
    assert flow["parent_latency_ms"] > 0 and flow["int8_latency_ms"] > 0
    assert flow["images"] > 0 and flow["b_parent"] > 0 and flow["a_int8"] > 0
    assert flow["child_id"].startswith("prj-")
    # the catalog is the PostgreSQL container's (not a SQLite fallback in the gateway's emptyDir): the parent and
    # its INT8 child are rows there
    rows = engine.podman("exec", "workbench-postgres", "psql", "--host=/var/run/postgresql", "--username=workbench",
                         "--dbname=workbench", "--tuples-only", "--no-align", "--command",
                         f"select count(*) from projects where id = '{flow['child_id']}' and parent_id is not null")
    assert rows == "1"


def test_the_podman_options_come_from_the_rendered_manifests(tmp_path, monkeypatch):
    """Without running anything: the gateway's and SeaweedFS's pods as podman options, and a planted change in the
    manifests reaching them (the options are derived, not written a second time)."""
    if os.geteuid() != 0:
        pytest.skip("the mounted Secret files are given to the pod's fsGroup, which takes root")
    monkeypatch.setattr(runner, "STATE", tmp_path)
    manifests = runner.Manifests(runner.render())
    found = runner.parts(manifests)
    gateway = found["gateway"]
    args = runner.podman_args(gateway, gateway.main, manifests, "workbench-dev", set())
    line = " ".join(args)
    for option in ("--user 10001:10001", "--group-add 10001", "--read-only --read-only-tmpfs=false", "--cap-drop=all",
                   "--security-opt=no-new-privileges", "--network-alias gateway", "--publish 127.0.0.1::50051",
                   "type=tmpfs,destination=/tmp,tmpfs-mode=0777,U=true,tmpfs-size=268435456"):
        assert option in line, option
    assert args[-2:] == ['["python", "-m", "services.gateway"]', "workbench:0.1.0"]
    env = (tmp_path / "workbench-gateway" / "env").read_text().splitlines()
    assert "WORKBENCH_S3_ENDPOINT=seaweedfs:8333" in env
    assert "WORKBENCH_DATABASE_URL=postgresql://workbench:dev-database-password-not-for-production@postgres:5432/" \
           "workbench" in env
    assert (tmp_path / "workbench-gateway" / "env").stat().st_mode & 0o777 == 0o600
    # the Secret files SeaweedFS's init container reads: 0440, its fsGroup's
    seaweedfs = found["seaweedfs"]
    init = seaweedfs.spec["initContainers"][0]
    runner.podman_args(seaweedfs, init, manifests, "workbench-dev", runner.shared_volumes(seaweedfs))
    key = tmp_path / "workbench-seaweedfs-identities" / "volumes" / "keys" / "gateway" / "access-key"
    assert key.read_text() == "gateway" and key.stat().st_mode & 0o777 == 0o440 and key.stat().st_gid == 1000
    # planted: a writable root filesystem and another user in the manifest
    gateway.main["securityContext"]["readOnlyRootFilesystem"] = False
    gateway.spec["securityContext"]["runAsUser"] = 10002
    line = " ".join(runner.podman_args(gateway, gateway.main, manifests, "workbench-dev", set()))
    assert "--read-only" not in line and "--user 10002:10001" in line
