"""Two gateways on one PostgreSQL, as real processes beside the local stack: one killed mid-quantization,
a request_id raced through both, and the database itself taken away and brought back."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from services.gateway.db import Database
from services.stack import LocalStack, free_ports
from tests.conftest import tiny_project
from tests.faults.conftest import FRAMES, up
from tests.harness import ONE_CALIBRATION, postgres_folder
from workbench.client import WorkbenchClient, WorkbenchError
from workbench.v1 import common_pb2, gateway_pb2

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Replicas:
    stack: LocalStack
    postgres_dir: Path
    postgres: object
    second: subprocess.Popen | None
    second_address: str
    clients: dict[str, WorkbenchClient]  # by address

    @property
    def addresses(self) -> list[str]:
        return [self.stack.address(), self.second_address]

    def database(self) -> Database:
        return Database(self.stack.database_url())

    def pid(self, address: str) -> int:
        return self.stack.pid("gateway") if address == self.stack.address() else self.second.pid

    def owner_pid(self, job_id: str) -> int:
        """The pid of the gateway holding the job's lease (owners are host-pid-random)."""
        database = self.database()
        try:
            with database.read() as tx:
                owner = tx.execute(sa.text("SELECT owner FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
        finally:
            database.dispose()
        return int(owner.split("-")[-2])


def start_second_gateway(stack: LocalStack, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Another gateway process, configured as the stack's own, on its own port."""
    port = port or free_ports(1)[0]
    # its metrics on a port of its own too (0: any free one), not the first gateway's
    env = {**stack.service_env("gateway"), "WORKBENCH_LISTEN": f"127.0.0.1:{port}", "WORKBENCH_JOB_LEASE_SECONDS": "3",
           "WORKBENCH_METRICS_LISTEN": "127.0.0.1:0"}
    log = (stack.log_dir / "gateway-2.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env, cwd=REPO,
                               stdout=log, stderr=log, start_new_session=True)
    client = WorkbenchClient(f"127.0.0.1:{port}", timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if client.health() == "SERVING":
                break
        except WorkbenchError:
            pass
        time.sleep(0.2)
    client.close()
    return process, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def postgres_dir():
    with postgres_folder() as folder:
        yield folder


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, postgres_dir):
    import pgserver

    postgres = pgserver.get_server(postgres_dir, cleanup_mode="stop")
    stack = LocalStack(tmp_path_factory.mktemp("stack"), free_ports=True)
    replicas = Replicas(stack, postgres_dir, postgres, None, "", {})
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("WORKBENCH_DATABASE_URL", postgres.get_uri())
            up(stack)
            replicas.second, replicas.second_address = start_second_gateway(stack)
            replicas.clients.update({a: WorkbenchClient(a, timeout=60) for a in replicas.addresses})
            yield replicas
    finally:  # the tests restart the second gateway and PostgreSQL: stop the ones running now
        for client in replicas.clients.values():
            client.close()
        if replicas.second is not None:
            replicas.second.kill()
            replicas.second.wait()
        stack.kill()
        replicas.postgres.cleanup()


@pytest.fixture(scope="module")
def parent(replicas):
    return tiny_project(replicas.clients[replicas.stack.address()], FRAMES)


def test_a_gateway_killed_mid_quantization_leaves_the_job_to_the_other(replicas, parent):
    first = replicas.clients[replicas.stack.address()]
    job = first.optimize_project(parent.id, ONE_CALIBRATION)
    # whichever gateway claimed it is the one to kill; its watcher must carry on through the other
    seen: list[common_pb2.JobEvent] = []
    for event in first.watch_job(job.id):
        seen.append(event)
        if event.progress.stage == "statistics":
            break
    victim_pid = replicas.owner_pid(job.id)
    victim = next(a for a in replicas.addresses if replicas.pid(a) == victim_pid)
    survivor = next(a for a in replicas.addresses if a != victim)
    watching = replicas.clients[victim].stub.WatchJob(
        gateway_pb2.WatchJobRequest(job_id=job.id, after_sequence=seen[-1].sequence))
    through_victim: list[common_pb2.JobEvent] = []
    reader = threading.Thread(target=lambda: _read_until_broken(watching, through_victim))
    reader.start()
    time.sleep(0.5)
    subprocess.run(["kill", "-9", str(victim_pid)], check=True)
    reader.join(timeout=30)
    last = (through_victim or seen)[-1].sequence
    rest = list(replicas.clients[survivor].watch_job(job.id, after_sequence=last))
    events = seen + through_victim + rest
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))  # no gap, no repeat
    assert events[-1].state == common_pb2.JOB_STATE_SUCCEEDED, events[-1].job.error
    assert any("resumed (attempt 2)" in e.progress.message for e in rest)
    children = list(replicas.clients[survivor].list_projects(parent_id=parent.id))
    assert [c.id for c in children] == [events[-1].job.output.project_id]  # exactly one child
    # bring the killed gateway back, on its address, for the tests after
    if victim == replicas.stack.address():
        up(replicas.stack, WORKBENCH_DATABASE_URL=replicas.postgres.get_uri())
    else:
        replicas.second.wait()
        replicas.second, _ = start_second_gateway(replicas.stack, int(victim.rpartition(":")[2]))
    replicas.clients.pop(victim).close()  # a fresh channel: the old one is backing off from the dead gateway
    replicas.clients[victim] = WorkbenchClient(victim, timeout=60)


def _read_until_broken(stream, into: list) -> None:
    try:
        for response in stream:
            into.append(response.event)
    except grpc.RpcError:
        pass


def test_a_request_id_raced_through_two_gateways_makes_one_record(replicas, parent):
    request_id = f"race-{uuid.uuid4().hex}"
    clients = [replicas.clients[a] for a in replicas.addresses] * 4
    barrier, made, jobs = threading.Barrier(len(clients)), [], []

    def create(client: WorkbenchClient) -> None:
        barrier.wait()
        made.append(client.create_project("raced", request_id=request_id).id)
        jobs.append(client.benchmark_project(parent.id, common_pb2.BenchmarkConfig(
            duration_seconds=1, random_inputs=True), request_id=request_id).id)

    threads = [threading.Thread(target=create, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 1 and len(set(jobs)) == 1
    assert len([p for p in replicas.clients[replicas.addresses[0]].list_projects() if p.name == "raced"]) == 1
    replicas.clients[replicas.addresses[1]].wait_job(jobs[0])


def test_the_database_unreachable_is_unavailable_and_not_serving_and_work_resumes(replicas, parent):
    import pgserver

    client = replicas.clients[replicas.stack.address()]
    job = client.benchmark_project(parent.id, common_pb2.BenchmarkConfig(duration_seconds=4, random_inputs=True))
    replicas.postgres.cleanup()  # stops PostgreSQL
    try:
        with pytest.raises(WorkbenchError) as err:
            client.list_projects().__next__()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert "catalog database is unavailable" in err.value.message
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and client.health() != "NOT_SERVING":
            time.sleep(0.2)
        assert client.health() == "NOT_SERVING"
        time.sleep(3)  # the job goes on; its end waits for the database
    finally:
        replicas.postgres = pgserver.get_server(replicas.postgres_dir, cleanup_mode="stop")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and client.health() != "SERVING":
        time.sleep(0.2)
    assert client.health() == "SERVING"
    ended = client.wait_job(job.id)
    assert ended.state == common_pb2.JOB_STATE_SUCCEEDED
    assert client.get_project(parent.id).last_benchmark.throughput_fps > 0
