"""The fixed cost of a job: an "empty" job (VERIFY_UPLOAD of a tiny presigned upload, no worker involved)
timed from CompleteUpload (the submit) to the client seeing its terminal event on WatchJob, through a real
gateway process on a throwaway SeaweedFS. Also the stage timings the gateway reports in the job's terminal
event (progress.metrics "job_*_s"). Target: median <= 0.05 s.

    .venv/bin/python bench/jobs.py [--jobs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, seaweed, service_process  # noqa: E402
from workbench.client import WorkbenchClient  # noqa: E402
from workbench.v1 import gateway_pb2  # noqa: E402


def empty_job(client: WorkbenchClient, data: bytes) -> tuple[float, dict[str, float]]:
    created = client.stub.CreateUpload(gateway_pb2.CreateUploadRequest(
        file_name="tiny.bin", size=len(data), request_id=uuid.uuid4().hex))
    put = urllib.request.Request(created.upload_url, data=data, method="PUT")
    with urllib.request.urlopen(put, timeout=30):
        pass
    start = time.perf_counter()
    job = client.stub.CompleteUpload(gateway_pb2.CompleteUploadRequest(upload_id=created.upload.id)).job
    last = None
    for event in client.watch_job(job.id):
        last = event
    seconds = time.perf_counter() - start
    metrics = dict(last.job.progress.metrics) if last is not None else {}
    return seconds, {k: v for k, v in metrics.items() if k.startswith("job_")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    with seaweed() as (_, settings), service_process("gateway", settings) as (_, gateway):
        client = WorkbenchClient(gateway, timeout=60)
        data = b"x" * 1024
        empty_job(client, data)  # warm-up: channels, first queries
        runs = [empty_job(client, data) for _ in range(args.jobs)]
    seconds = [s for s, _ in runs]
    stages = {key: round(statistics.median(m.get(key, 0.0) for _, m in runs), 4)
              for key in sorted({k for _, m in runs for k in m})}
    emit({
        "empty_job": "VERIFY_UPLOAD of a 1 KiB presigned upload, CompleteUpload -> terminal event on WatchJob",
        "jobs": args.jobs,
        "empty_job_median_s": round(statistics.median(seconds), 4),
        "empty_job_min_s": round(min(seconds), 4), "empty_job_max_s": round(max(seconds), 4),
        "gateway_stage_medians_s": stages,
        "target": "empty_job_median_s <= 0.05",
    })


if __name__ == "__main__":
    main()
