"""The Node.js client (sdk/node, @grpc/grpc-js over the same protos) against real gateway and services."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from workbench.v1 import common_pb2

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("node") is None or not (REPO / "node_modules" / "@grpc" / "grpc-js").exists(),
                    reason="Node.js and `npm ci` (run by `make test`) are needed for the Node client")
def test_node_client_lists_projects_and_watches_a_job(workbench, tmp_path):
    client = workbench.client
    project = client.create_project("from python")
    path = tmp_path / "weights.cfg"
    path.write_bytes((REPO / "data" / "darknet" / "yolov4-tiny.cfg").read_bytes())
    upload = client.upload_file_presigned(path)  # runs a verify job to its end
    job = next(j for j in client.list_jobs() if j.output.upload_id == upload.id)
    run = subprocess.run(["node", str(REPO / "sdk" / "node" / "smoke.js"), workbench.servers["gateway"].address, job.id],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert project.id in result["projects"] and result["created"] in result["projects"]
    assert result["sequences"] == list(range(1, len(result["sequences"]) + 1))
    assert result["states"][-1] == common_pb2.JobState.Name(common_pb2.JOB_STATE_SUCCEEDED)
    assert [p.name for p in client.list_projects()][0] == "from node"  # newest first
