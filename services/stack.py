"""The local default stack: a SeaweedFS S3 server, the five services and the web console on localhost.

`workbench-dev up` starts whatever is not running, detached, and waits until every component
reports SERVING; `down` stops them (the services first, together, the S3 server last; ~2 s when
idle); `status` shows each component's health. Everything lives under one home folder
(WORKBENCH_HOME, default ~/.workbench): the S3 data, the catalog database (SQLite), credentials
made on first start, logs and pid files.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from workbench_runtime.errors import FailedPrecondition, WorkbenchError
from services.common.seaweed import SeaweedPorts, SeaweedServer
from services.common.settings import DEFAULT_PORTS, SERVICE_NAMES

if TYPE_CHECKING:
    from services.common.object_store import ObjectStore

S3_PORT = 8333
WEB_PORT = 8080
# each process's Prometheus endpoint (/metrics), beside its own port: gateway 9091 ... web 9096
METRICS_PORTS = {name: 9091 + i for i, name in enumerate((*SERVICE_NAMES, "web"))}
# the processes the stack runs: the gRPC services, then the console (an HTTP client of the gateway)
PROCESSES = (*SERVICE_NAMES, "web")
START_TIMEOUT_S = 120.0
# the services together: their grace period for RPCs in flight (grace_seconds, 10 s) and their exit
STOP_TIMEOUT_S = 15.0
# SeaweedFS's graceful exit takes ~16 s (its filer waits out in-process subscriptions) and adds nothing
# for acknowledged writes, which are already in the kernel's hands: after this grace for requests in
# flight it is SIGKILLed and its files fsync'ed (see services/common/seaweed.py; tests/stack checks it).
S3_STOP_GRACE_S = 1.0


def default_home() -> Path:
    return Path(os.environ.get("WORKBENCH_HOME", Path.home() / ".workbench"))


@dataclass
class Component:
    name: str
    address: str
    healthy: bool
    detail: str
    metrics: str = ""  # its Prometheus endpoint


class LocalStack:
    def __init__(self, home: Path | None = None, *, free_ports: bool = False):
        """free_ports: a first start picks free ports instead of the defaults (a second stack beside one)."""
        self.home = home or default_home()
        self.free_ports = free_ports
        self.run_dir, self.log_dir = self.home / "run", self.home / "logs"
        self.config_file = self.home / "stack.json"
        self.s3_dir = self.home / "s3"

    # -- configuration ---------------------------------------------------------------------

    def config(self) -> dict:
        """Ports and credentials; made once, then reused so stored data stays reachable."""
        if self.config_file.exists():
            config = json.loads(self.config_file.read_text())
            if "metrics_ports" not in config:  # a home made before metrics: give its processes their ports
                config["metrics_ports"] = self._metrics_ports()
                self._save(config)
            return config
        self.home.mkdir(parents=True, exist_ok=True)
        seaweed_ports = {}
        if self.free_ports:
            # every port at once, SeaweedFS's inner ones too: picked apart, two could get the same free port
            inner = [f.name for f in fields(SeaweedPorts) if f.name != "s3"]
            s3_port, web_port, *ports = free_ports(2 + len(SERVICE_NAMES) + len(inner) + len(PROCESSES))
            chosen = dict(zip(SERVICE_NAMES, ports))
            seaweed_ports = dict(zip(inner, ports[len(SERVICE_NAMES):]))
            metrics_ports = dict(zip(PROCESSES, ports[len(SERVICE_NAMES) + len(inner):]))
        else:
            s3_port = int(os.environ.get("WORKBENCH_S3_PORT", S3_PORT))
            web_port = int(os.environ.get("WORKBENCH_WEB_PORT", WEB_PORT))
            chosen = {name: int(os.environ.get(f"WORKBENCH_{name.upper()}_PORT", port))
                      for name, port in DEFAULT_PORTS.items()}
            metrics_ports = self._metrics_ports()
        config = {
            "s3_port": s3_port,
            "s3_access_key": "workbench",
            "s3_secret_key": secrets.token_urlsafe(24),
            "internal_token": secrets.token_urlsafe(24),
            "ports": chosen,
            "web_port": web_port,
            "seaweed_ports": seaweed_ports,
            "metrics_ports": metrics_ports,
        }
        self._save(config)
        return config

    def _metrics_ports(self) -> dict[str, int]:
        if self.free_ports:
            return dict(zip(PROCESSES, free_ports(len(PROCESSES))))
        return {name: int(os.environ.get(f"WORKBENCH_{name.upper()}_METRICS_PORT", port))
                for name, port in METRICS_PORTS.items()}

    def _save(self, config: dict) -> None:
        self.config_file.write_text(json.dumps(config, indent=2))
        self.config_file.chmod(0o600)

    def database_url(self) -> str:
        """The catalog: WORKBENCH_DATABASE_URL when set (e.g. a PostgreSQL), else SQLite in the home folder."""
        return os.environ.get("WORKBENCH_DATABASE_URL") or f"sqlite:///{self.home / 'catalog.db'}"

    def service_env(self, name: str) -> dict[str, str]:
        config = self.config()
        ports = config["ports"]
        env = dict(os.environ)
        env["WORKBENCH_METRICS_LISTEN"] = f"127.0.0.1:{config['metrics_ports'][name]}"
        if name == "web":  # a client of the gateway like any other: no S3, database or internal credentials
            env.update({"WORKBENCH_WEB_LISTEN": self.web_address(), "WORKBENCH_ADDRESS": self.address()})
            return env
        env.update({
            "WORKBENCH_DATABASE_URL": self.database_url(),
            "WORKBENCH_LISTEN": f"127.0.0.1:{ports[name]}",
            "WORKBENCH_S3_ENDPOINT": f"127.0.0.1:{config['s3_port']}",
            "WORKBENCH_S3_ACCESS_KEY": config["s3_access_key"],
            "WORKBENCH_S3_SECRET_KEY": config["s3_secret_key"],
            "WORKBENCH_INTERNAL_TOKEN": config["internal_token"],
            **{f"WORKBENCH_{other.upper()}_ADDR": f"127.0.0.1:{ports[other]}" for other in SERVICE_NAMES if other != "gateway"},
        })
        if name == "quantizer":  # calibrations take turns (in the gateway's queue) instead of sharing two cores
            env.setdefault("WORKBENCH_SLOTS", "1")
        return env

    def object_store(self) -> ObjectStore:
        from services.common.object_store import ObjectStore  # here, like Database in up(): `down` needs neither

        config = self.config()
        return ObjectStore(f"127.0.0.1:{config['s3_port']}", config["s3_access_key"], config["s3_secret_key"])

    # -- up / down / status ----------------------------------------------------------------

    def up(self) -> list[Component]:
        for folder in (self.run_dir, self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        config = self.config()
        seaweed = SeaweedServer.attach(self.s3_dir, config["s3_access_key"], config["s3_secret_key"])
        if seaweed is None:
            SeaweedServer.start(
                self.s3_dir, config["s3_port"], config["s3_access_key"], config["s3_secret_key"],
                ports=SeaweedPorts(**config.get("seaweed_ports", {})), detached=True, ready_timeout=START_TIMEOUT_S,
            )
        else:
            seaweed.wait_ready(START_TIMEOUT_S)
        from services.gateway.db import Database  # SQLAlchemy: ~0.5 s of imports that `down` does without

        database = Database(self.database_url())
        try:
            database.migrate()  # the gateway migrates too; here a broken catalog fails `up` with its reason
        finally:
            database.dispose()
        for name in PROCESSES:
            if not _alive(self.pid(name)):
                self._start_service(name)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            components = self.status()
            if all(c.healthy for c in components):
                return components
            if time.monotonic() > deadline:
                failing = ", ".join(f"{c.name} ({c.detail})" for c in components if not c.healthy)
                raise FailedPrecondition(f"not healthy after {START_TIMEOUT_S:.0f}s: {failing}; see {self.log_dir}")
            for name in PROCESSES:
                if not _alive(self.pid(name)):
                    raise FailedPrecondition(f"{name} exited during start; see {self.log_dir / (name + '.log')}")
            time.sleep(0.5)

    def down(self) -> None:
        """The services together (SIGTERM: each drains its RPCs for its grace period, the gateway hands
        its jobs back; SIGKILL for any still running after STOP_TIMEOUT_S), then the object store, which
        they may still be writing to until they are gone."""
        pids = {name: self.pid(name) for name in PROCESSES}
        for pid in pids.values():
            if _alive(pid):
                _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S  # one deadline for all: they stop in parallel
        for name, pid in pids.items():
            _wait_exit(pid, deadline - time.monotonic())
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        seaweed = SeaweedServer.attach(self.s3_dir)
        if seaweed is not None:
            seaweed.stop(timeout=S3_STOP_GRACE_S)

    def kill(self) -> None:
        """Stop everything at once (SIGKILL): for throwaway stacks, whose data does not matter."""
        for name in PROCESSES:
            if _alive(self.pid(name)):
                os.kill(self.pid(name), signal.SIGKILL)
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        seaweed = SeaweedServer.attach(self.s3_dir)
        if seaweed is not None:
            seaweed.stop(timeout=0)

    def address(self, name: str = "gateway") -> str:
        return f"127.0.0.1:{self.config()['ports'][name]}"

    def web_address(self) -> str:
        return f"127.0.0.1:{self.config().get('web_port', WEB_PORT)}"

    def web_url(self) -> str:
        return f"http://{self.web_address()}/"

    def metrics_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.config()['metrics_ports'][name]}/metrics"

    def status(self) -> list[Component]:
        config = self.config()
        components = [self._s3_status(config)]
        for name in SERVICE_NAMES:
            address = f"127.0.0.1:{config['ports'][name]}"
            components.append(Component(name, address, *grpc_health(address), self.metrics_url(name)))
        components.append(Component("web", self.web_url(), *http_health(self.web_url() + "healthz"),
                                    self.metrics_url("web")))
        return components

    # -- internals -------------------------------------------------------------------------

    def _s3_status(self, config: dict) -> Component:
        address = f"127.0.0.1:{config['s3_port']}"
        try:
            self.object_store().bucket_exists("workbench")
            return Component("s3", address, True, "SERVING")
        except WorkbenchError as exc:
            return Component("s3", address, False, exc.message)

    def pid(self, name: str) -> int | None:
        pid_file = self.run_dir / f"{name}.pid"
        return int(pid_file.read_text()) if pid_file.exists() else None

    def _start_service(self, name: str) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], env=self.service_env(name),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        (self.run_dir / f"{name}.pid").write_text(str(process.pid))


def free_ports(count: int) -> list[int]:
    """count distinct free loopback ports: the sockets are held together so the kernel never repeats one."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers kill(0); reap it so it reads as gone.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    # Not ours (the `up` that started it has exited): a zombie waits for init to reap it, which some
    # inits (a container's) do only every few seconds, or never; it has exited all the same.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone meanwhile, or no /proc (not Linux): trust kill(0)
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # exited meanwhile
        pass


def _wait_exit(pid: int | None, timeout: float) -> None:
    """Wait up to timeout s for pid to exit; SIGKILL it after that, and wait until it is gone."""
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def http_health(url: str) -> tuple[bool, str]:
    """(passes, what it saw) of GET url: 200 is SERVING."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200, "SERVING" if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}"
    except OSError as error:
        return False, "UNAVAILABLE" if isinstance(error, ConnectionError) else str(error)


def grpc_health(address: str) -> tuple[bool, str]:
    """(passes, status) of grpc.health.v1 Check on address (the overall service)."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError as error:
            return False, error.code().name
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return status == "SERVING", status
