"""Dispatch by capacity: two quantizer replicas with one slot each behind one gateway address, four
calibrations at once. Both replicas work until the queue drains, and a waiting job shows its place."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from services.common.server import ServiceServer
from services.quantizer.__main__ import registrar as quantizer_registrar
from tests.conftest import start_services, stop_services, tiny_project
from tests.harness import ONE_CALIBRATION
from workbench.client import WorkbenchClient
from workbench.v1 import common_pb2

DATA = Path(__file__).resolve().parents[2] / "data"
FRAMES = sorted((DATA / "vtest").glob("*.jpg"))[::10]  # 8 frames


def test_calibrations_go_to_whichever_replica_has_a_free_slot(s3_settings):
    settings = dataclasses.replace(s3_settings, listen="127.0.0.1:0", grace_seconds=1.0, internal_token="internal")
    one_slot = dataclasses.replace(settings, slots=1)
    replicas = [ServiceServer("quantizer", one_slot, quantizer_registrar(one_slot)) for _ in range(2)]
    servers: dict[str, ServiceServer] = {}
    try:
        for replica in replicas:
            replica.start()
        # one address for both, as a headless Service resolves to every pod
        both = f"ipv4:{replicas[0].address},{replicas[1].address}"
        _, servers = start_services(settings, gateway_overrides={"quantizer_addr": both})
        client = WorkbenchClient(servers["gateway"].address, timeout=60)
        parent = tiny_project(client, FRAMES)

        busy_together, stop = [], threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                busy_together.append(sum(r.slots.busy for r in replicas))

        sampler = threading.Thread(target=sample)
        sampler.start()
        jobs = [client.optimize_project(parent.id, ONE_CALIBRATION) for _ in range(4)]
        events: dict[str, list[common_pb2.JobEvent]] = {}
        for job in jobs:
            events[job.id] = list(client.watch_job(job.id))
        stop.set()
        sampler.join()

        assert all(e[-1].state == common_pb2.JOB_STATE_SUCCEEDED for e in events.values())
        assert [r.slots.peak for r in replicas] == [1, 1]  # one calibration at a time on each
        assert all(r.slots.served >= 1 for r in replicas) and sum(r.slots.served for r in replicas) == 4
        assert max(busy_together) == 2  # both replicas worked at once
        waits = [e.progress.message for evs in events.values() for e in evs if e.progress.stage == "queued"]
        assert any(m.startswith("waiting for a free quantizer slot: ") and "ahead" in m for m in waits)
        assert any("1 job ahead" in m for m in waits)  # the fourth job waited behind the third
        client.close()
    finally:
        stop_services(servers)
        for replica in replicas:
            replica.shutdown(grace=0)
