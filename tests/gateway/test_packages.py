"""Deployment packages: exported through the gateway, unpacked into a fresh venv, run on a real photo."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path


PHOTO = Path(__file__).resolve().parents[2] / "data" / "images" / "person.jpg"


def test_package_runs_in_a_fresh_venv(workbench, parent, tmp_path):
    client = workbench.client
    package_id = client.wait_job(client.export_package(parent.id).id).output.package_id
    archive = client.download_package(package_id, tmp_path / "package.tar.gz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "package", filter="data")
    assert {"model/model.xml", "model/model.bin", "model/model_info.json", "infer.py", "requirements.txt",
            "README.md"} <= names
    requirements = (tmp_path / "package" / "requirements.txt").read_text()
    assert "openvino==" in requirements and "numpy==" in requirements
    # the model-I/O runtime is pinned and shipped as a wheel, never as copied source files
    runtime = f"workbench-runtime=={metadata.version('workbench-runtime')}"
    assert runtime in requirements.splitlines()
    assert f"wheels/workbench_runtime-{metadata.version('workbench-runtime')}-py3-none-any.whl" in names
    assert not any(name.startswith(("services/", "workbench_runtime/")) for name in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(tmp_path / "package" / "requirements.txt")],
                   check=True, timeout=600)
    run = subprocess.run([str(venv / "bin" / "python"), "infer.py", str(PHOTO), "--threshold", "0.2"],
                         cwd=tmp_path / "package", capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    installed = subprocess.run([str(venv / "bin" / "pip"), "show", "-f", "workbench-runtime"],
                               capture_output=True, text=True, check=True).stdout
    assert str(venv) in installed  # from the archive's wheel into the venv, not this checkout
    lines = [line.split() for line in run.stdout.splitlines()]
    labels = (tmp_path / "package" / "model" / "model_info.json").read_text()
    assert lines and all(len(line) == 6 and line[0] in labels for line in lines)
