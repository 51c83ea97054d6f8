"""What the tests and the benches both set up, as plain functions (no pytest, no fixtures): a throwaway
SeaweedFS on free loopback ports with its own credentials, settings that point the services at it, and
the real yolov4-tiny imported through the gateway as a project.

tests/conftest.py wraps these in fixtures; bench/harness.py calls them directly, so a bench measures
the same setup the tests check.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from services.common.seaweed import SeaweedServer
from services.common.settings import Settings
from services.reference_models import yolov4_tiny
from workbench.client import WorkbenchClient
from workbench.v1 import gateway_pb2, quantizer_pb2

SEAWEED_READY_S = 90  # a cold start on a loaded machine
# One calibration on every CPU, for tests about something other than the choice: the automatic overflow handling
# measures two settings on AVX2 (services/common/cpu.py); "enable" never saturates, on any instruction set
ONE_CALIBRATION = quantizer_pb2.QuantizationConfig(preset=quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE,
                                                   overflow_fix=quantizer_pb2.OVERFLOW_FIX_ENABLE)


def start_seaweed(state_dir: Path | str, access_key: str) -> SeaweedServer:
    """A SeaweedFS S3 server on free loopback ports, its state in state_dir, with a fresh random secret."""
    return SeaweedServer.start(state_dir, 0, access_key, secrets.token_hex(16), ready_timeout=SEAWEED_READY_S)


def stop_seaweed(server: SeaweedServer) -> None:
    server.stop(timeout=1)  # a graceful SeaweedFS exit takes ~16 s; SIGKILL loses nothing here


def s3_settings(server: SeaweedServer, bucket: str, database_url: str, **overrides) -> Settings:
    """Settings (defaults, no environment) pointing at the server, one bucket and one catalog database."""
    return Settings.from_env({}, s3_endpoint=server.endpoint, s3_access_key=server.access_key,
                             s3_secret_key=server.secret_key, bucket=bucket, database_url=database_url, **overrides)


def tiny_project(client: WorkbenchClient, frames: list[Path], *, dataset_name: str = "vtest",
                 project_name: str = "tiny on pedestrians") -> gateway_pb2.Project:
    """The real yolov4-tiny and some frames imported through the gateway, as one project."""
    files = yolov4_tiny()
    job = client.import_darknet("yolov4-tiny", files.cfg, files.weights, files.names)
    model = client.wait_job(job.id).output.model_id
    dataset = client.wait_job(client.import_dataset(dataset_name, frames).id).output.dataset_id
    return client.create_project(project_name, model_id=model, dataset_id=dataset)


@contextlib.contextmanager
def postgres_folder() -> Iterator[Path]:
    """A folder for a pgserver data directory, outside pytest's temporary tree: run as root, pgserver runs
    PostgreSQL as a user of its own, and every pytest session that starts on the machine resets
    /tmp/pytest-of-<user> to mode 0700, locking that user out of a running server's files."""
    folder = Path(tempfile.mkdtemp(prefix="workbench-postgres-"))
    try:
        yield folder / "data"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
