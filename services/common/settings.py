"""One typed settings object for every service, read from WORKBENCH_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Mapping

from workbench_runtime.errors import InvalidArgument

# Default local ports: gateway first, then the four services; the S3 server sits beside them.
DEFAULT_PORTS = {"gateway": 50051, "converter": 50052, "quantizer": 50053, "benchmark": 50054, "accuracy": 50055}
SERVICE_NAMES = tuple(DEFAULT_PORTS)


@dataclass(frozen=True)
class Settings:
    # where this server listens; port 0 picks a free port (tests)
    listen: str = "127.0.0.1:50051"
    # object store (any S3 API: SeaweedFS locally, MinIO on Kubernetes)
    s3_endpoint: str = "127.0.0.1:8333"
    s3_access_key: str = "workbench"
    s3_secret_key: str = field(default="workbench-secret", repr=False)  # like the tokens: never in a repr
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    bucket: str = "workbench"
    # addresses of the four worker services, as the gateway dials them
    converter_addr: str = "127.0.0.1:50052"
    quantizer_addr: str = "127.0.0.1:50053"
    benchmark_addr: str = "127.0.0.1:50054"
    accuracy_addr: str = "127.0.0.1:50055"
    # bearer token clients must present to the gateway; empty disables auth
    auth_token: str = field(default="", repr=False)
    # credential the gateway presents to the worker services; empty disables the check
    internal_token: str = field(default="", repr=False)
    # TLS: server certificate and key; a client CA turns on mutual TLS
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # CA the gateway trusts when it dials worker services over TLS
    tls_ca: str = ""
    max_message_bytes: int = 16 * 1024 * 1024
    max_workers: int = 16
    grace_seconds: float = 10.0
    keepalive_seconds: float = 30.0
    log_level: str = "INFO"
    log_format: str = "json"  # json | text
    # where Prometheus scrapes this service's /metrics ("0.0.0.0:9090"; port 0 picks a free one); "" = off
    metrics_listen: str = ""
    # largest upload the gateway accepts, in bytes
    max_upload_bytes: int = 8 * 1024 * 1024 * 1024
    # most elements a model's input or constant may have: an import with more is refused (the converter,
    # services/converter/limits.py); 0: no limit
    max_tensor_elements: int = 2**31
    # a worker's long calls (conversions, calibrations, measurements, evaluations) at once; past them a
    # call is refused at once and the gateway tries another replica. 0: no limit
    slots: int = 0
    # the gateway's catalog: a SQLAlchemy URL (sqlite:///..., postgresql://...); empty: SQLite under
    # WORKBENCH_HOME. Never in a repr: it may carry a password.
    database_url: str = field(default="", repr=False)
    # a gateway renews its jobs' leases while it runs them; a lease this old means its gateway is gone
    job_lease_seconds: float = 15.0
    # jobs one gateway runs at once (each mostly waits on a worker); the rest wait in the queue
    max_jobs: int = 8
    # open WatchJob streams one gateway serves (they share one thread); past it, a retry hint
    max_watchers: int = 10_000
    # the web console: where it listens, the gateway it calls (as the SDK's WORKBENCH_ADDRESS), and the
    # CA it trusts when that gateway speaks TLS
    # decoded, preprocessed images kept for the next evaluation (services/common/tensor_cache.py): a folder
    # ("" = one in the system's temporary directory, "off" = no cache) and its size cap
    tensor_cache_dir: str = ""
    tensor_cache_bytes: int = 4 * 1024**3
    # where measurements on one machine take turns (services/common/measure.py); "" = /dev/shm or the temp dir
    measure_lock_dir: str = ""
    # the CPU's instruction-set level as the project's own choices see it (services/common/cpu.py): "" reads
    # the CPU; avx2, avx512_core_vnni, avx512_core_amx, ... exercise another CPU class's logic on this one
    cpu_isa: str = ""
    web_listen: str = "127.0.0.1:8080"
    address: str = "127.0.0.1:50051"
    gateway_tls_ca: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Build settings from WORKBENCH_<FIELD> variables; overrides win over the environment."""
        env = os.environ if env is None else env
        values: dict = {}
        for f in fields(cls):
            raw = env.get(f"WORKBENCH_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        values.update(overrides)
        return cls(**values)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


def _parse(name: str, type_name: str, raw: str):
    try:
        if type_name == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        return raw
    except ValueError:
        raise InvalidArgument(f"WORKBENCH_{name.upper()}={raw!r} is not a valid {type_name}", field=name) from None
