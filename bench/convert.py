"""Converting full YOLOv4 (416x416, 64M parameters, 257 MB of generated weights) through the converter service.

Service side: ConvertModel on a converter process, from uploaded files in S3 to the stored IR.
Baseline: the same domain function on local files, plus the raw transfer of the same bytes with the
minio SDK at its default settings (weights down, IR up). The two alternate; figures are medians.
Peak memory is the converter process's VmHWM over all its runs.

    .venv/bin/python bench/convert.py [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import grpc
from minio import Minio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, median, peak_rss_mb, seaweed, service_process  # noqa: E402
from services.common.object_store import ObjectStore  # noqa: E402
from services.converter.convert import save  # noqa: E402
from services.converter.darknet import convert_darknet  # noqa: E402
from services.reference_models import yolov4_generated  # noqa: E402
from workbench.v1 import common_pb2, converter_pb2, converter_pb2_grpc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    files = yolov4_generated()
    weights_mb = files.weights.stat().st_size / 1e6
    with seaweed() as (_, settings):
        store, bucket = ObjectStore.from_settings(settings), settings.bucket
        inputs = {
            common_pb2.MODEL_FILE_ROLE_DARKNET_CFG: store.put_file(bucket, "in/yolov4.cfg", files.cfg),
            common_pb2.MODEL_FILE_ROLE_DARKNET_WEIGHTS: store.put_file(bucket, "in/yolov4.weights", files.weights),
            common_pb2.MODEL_FILE_ROLE_LABELS: store.put_file(bucket, "in/coco.names", files.names),
        }
        request = converter_pb2.ConvertModelRequest(
            framework=common_pb2.FRAMEWORK_DARKNET, output_bucket=bucket,
            files=[common_pb2.ModelFile(role=role, file_name=ref.key.rsplit("/", 1)[-1],
                                        object=common_pb2.ObjectRef(bucket=ref.bucket, key=ref.key, size=ref.size,
                                                                    sha256=ref.sha256))
                   for role, ref in inputs.items()],
        )
        raw = Minio(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, secure=False)
        service_s, baseline_s, down_s, convert_s, up_s, ir_mb = [], [], [], [], [], 0.0
        with service_process("converter", settings) as (process, address):
            stub = converter_pb2_grpc.ConverterServiceStub(grpc.insecure_channel(address))
            for _ in range(args.runs):
                store.delete_prefix(bucket, "models/")  # content addressing would skip a repeated upload
                start = time.perf_counter()
                *_, last = stub.ConvertModel(request, timeout=1800)
                service_s.append(time.perf_counter() - start)
                ir_mb = (last.model.xml.size + last.model.bin.size) / 1e6

                with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
                    work = Path(tmp)
                    start = time.perf_counter()
                    for ref in inputs.values():
                        raw.fget_object(bucket, ref.key, str(work / ref.key.rsplit("/", 1)[-1]))
                    downloaded = time.perf_counter()
                    model = convert_darknet(work / "yolov4.cfg", work / "yolov4.weights", names=work / "coco.names")
                    xml, bin_path = save(model, work / "ir" / "model.xml", compress_to_fp16=False)
                    converted = time.perf_counter()
                    raw.fput_object(bucket, "baseline/model.bin", str(bin_path))
                    raw.fput_object(bucket, "baseline/model.xml", str(xml))
                    done = time.perf_counter()
                    del model
                baseline_s.append(done - start)
                down_s.append(downloaded - start)
                convert_s.append(converted - downloaded)
                up_s.append(done - converted)
            converter_peak_mb = peak_rss_mb(process.pid)
    emit({
        "model": "yolov4-416 (generated weights)",
        "weights_mb": round(weights_mb, 1),
        "runs": args.runs,
        "service_s_median": round(median(service_s), 2),
        "baseline_s_median": round(median(baseline_s), 2),
        "service_over_baseline": round(median([s / b for s, b in zip(service_s, baseline_s)]), 3),
        "baseline_convert_s_median": round(median(convert_s), 2),
        "minio_download_mb_s": round(weights_mb / median(down_s), 1),
        "minio_upload_mb_s": round(ir_mb / median(up_s), 1),
        "converter_peak_rss_mb": round(converter_peak_mb, 1),
        "peak_over_weights": round(converter_peak_mb / weights_mb, 2),
        "targets": {"service_over_baseline": "<= 1.2", "peak_over_weights": "<= 3"},
    })


if __name__ == "__main__":
    main()
