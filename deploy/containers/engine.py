"""What build.py and stack.py share: the podman command with the project's containers.conf, the tool checks, and
the paths under build/containers/ (git-ignored) where the builds and the running stack keep their files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WORK = REPO / "build" / "containers"
CONTAINERS_CONF = HERE / "containers.conf"
# every container, network, volume and image this project makes carries it, so cleaning up never touches others'
LABEL = "io.workbench.containers=1"
TOOLS = ("podman", "runc", "mmdebstrap")
INSTALL_HINT = "apt-get install podman runc mmdebstrap"


def say(text: str) -> None:
    print(f"== {text}", file=sys.stderr, flush=True)


class ContainerError(RuntimeError):
    """A tool is missing, a build failed, or a part of the stack did not come up: the message says which."""


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise ContainerError(f"missing {', '.join(missing)}: {INSTALL_HINT}")


def environment() -> dict[str, str]:
    # an explicit CONTAINERS_CONF wins, so a machine that needs other settings can give its own
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def podman(*args: str, check: bool = True, timeout: float = 600, capture: bool = True) -> str:
    """Runs podman; its stdout, stripped. A failure raises with podman's own message."""
    result = subprocess.run(["podman", *args], env=environment(), timeout=timeout, text=True,
                            stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)
    if check and result.returncode != 0:
        raise ContainerError(f"podman {' '.join(args[:3])} ... failed ({result.returncode}): "
                             f"{(result.stderr or '').strip()[-2000:]}")
    return (result.stdout or "").strip()


def image_exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], env=environment()).returncode == 0


def image_size(tag: str) -> int:
    """Bytes, as `podman image inspect` reports them (the uncompressed layers)."""
    return int(json.loads(podman("image", "inspect", tag))[0]["Size"])
