"""The local stack as real processes on loopback (`workbench-dev up` in a temporary home), and ways to hurt it."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.common.object_store import ObjectStore
from services.common.seaweed import SeaweedServer
from services.common.settings import SERVICE_NAMES
from services.stack import LocalStack
from tests.conftest import tiny_project
from workbench.client import WorkbenchClient

DATA = Path(__file__).resolve().parents[2] / "data"
FRAMES = sorted((DATA / "vtest").glob("*.jpg"))[::5]  # 16 frames


@dataclass
class Faults:
    stack: LocalStack
    client: WorkbenchClient
    published: dict[str, int] = field(default_factory=dict)  # every object ever seen published

    @property
    def store(self) -> ObjectStore:
        return self.stack.object_store()

    def kill(self, name: str) -> None:
        """kill -9 one service: no goodbye, no graceful drain."""
        os.kill(self.stack.pid(name), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.stack.status()[1 + SERVICE_NAMES.index(name)].healthy and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop_s3(self) -> None:
        server = SeaweedServer.attach(self.stack.s3_dir)
        assert server is not None
        server.stop(timeout=0)  # SIGKILL at once

    def restore(self) -> None:
        """Start whatever is down (`workbench-dev up`) and wait until everything is SERVING."""
        up(self.stack)

    def objects(self) -> dict[str, int]:
        """Every published object in the bucket (staging under _tmp/ excluded), by key, with its size."""
        found = {o.key: o.size for o in self.store.iter_objects("workbench", "")}
        self.published.update(found)
        return found

    def lost(self) -> list[str]:
        """Objects seen published at some point that are gone now (no test here deletes anything)."""
        present = self.objects()
        return sorted(key for key in self.published if key not in present)


# a short lease: a killed gateway's jobs are taken over within seconds, not the default 15
SHORT_LEASE = {"WORKBENCH_JOB_LEASE_SECONDS": "3"}


def up(stack: LocalStack, **env: str) -> None:
    """`workbench-dev up`, with the short lease and any other WORKBENCH_* settings in env."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**SHORT_LEASE, **env}.items():
            patch.setenv(name, value)
        stack.up()


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("stack"), free_ports=True)
    client = WorkbenchClient(stack.address(), timeout=60)
    faults = Faults(stack, client)
    try:
        up(stack)  # inside the try: a stack that fails half-way up is still taken down
        yield faults
        report = os.environ.get("WORKBENCH_RELIABILITY_OUT")
        if report:  # bench/reliability.py collects this
            Path(report, "objects.json").write_text(json.dumps(
                {"objects_checked": len(faults.published), "objects_lost": faults.lost()}))
    finally:
        client.close()
        stack.kill()


@pytest.fixture(scope="module")
def parent(faults):
    """yolov4-tiny on 16 pedestrian frames, imported through the stack."""
    return tiny_project(faults.client, FRAMES)
