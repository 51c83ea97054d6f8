"""The benchmark service against OpenVINO's own benchmark_app, on the same IR and configuration.

For each model, runs alternate: the benchmark service (a real process, over gRPC, random inputs)
and `benchmark_app -m IR -t D -hint throughput` (random inputs too), several pairs; reports each
side's median FPS and the median of the per-pair ratios (target >= 0.97). With --int8, each model
is also quantized with a direct nncf call on random calibration data (speed only) and the INT8/FP32
speedup both tools see is reported.

    .venv/bin/python bench/benchmark_parity.py [--pairs 3] [--duration 10] [--models yolov4-tiny,yolov4] [--int8]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, median, seaweed, service_process  # noqa: E402
from services.common.artifacts import upload_ir  # noqa: E402
from services.common.object_store import ObjectStore  # noqa: E402
from services.common.pb import ref_to_pb  # noqa: E402
from services.converter.darknet import convert_darknet  # noqa: E402
from services.reference_models import yolov4_generated, yolov4_tiny  # noqa: E402
from workbench.v1 import benchmark_pb2, benchmark_pb2_grpc, common_pb2  # noqa: E402

BENCHMARK_APP = Path(sys.executable).with_name("benchmark_app")


def build_ir(name: str, folder: Path) -> Path:
    files = yolov4_tiny() if name == "yolov4-tiny" else yolov4_generated()
    xml = folder / name / "model.xml"
    ov.save_model(convert_darknet(files.cfg, files.weights, names=files.names), str(xml), compress_to_fp16=False)
    return xml


def quantize_random(xml: Path) -> Path:
    import nncf
    import numpy as np

    model = ov.Core().read_model(str(xml))
    shape = [d.get_length() for d in model.input(0).get_partial_shape()]
    rng = np.random.default_rng(0)
    data = nncf.Dataset([rng.random(shape, dtype=np.float32) for _ in range(16)])
    int8 = xml.with_name("model-int8.xml")
    ov.save_model(nncf.quantize(model, data, subset_size=16), str(int8), compress_to_fp16=False)
    return int8


def app_fps(xml: Path, seconds: float) -> float:
    out = subprocess.run([str(BENCHMARK_APP), "-m", str(xml), "-t", str(int(seconds)), "-hint", "throughput"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Throughput:\s+([\d.]+) FPS", out).group(1))


def service_fps(stub, artifact: common_pb2.ModelArtifact, seconds: float) -> float:
    request = benchmark_pb2.BenchmarkRequest(model=artifact, config=common_pb2.BenchmarkConfig(
        duration_seconds=seconds, hint=common_pb2.PERFORMANCE_HINT_THROUGHPUT, random_inputs=True))
    *_, last = stub.Benchmark(request, timeout=seconds * 10 + 120)
    return last.result.throughput_fps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--models", default="yolov4-tiny,yolov4")
    parser.add_argument("--int8", action="store_true")
    args = parser.parse_args()
    figures: dict = {"duration_s": args.duration, "pairs": args.pairs, "device": "CPU", "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-parity-") as tmp, seaweed() as (_, settings):
        store = ObjectStore.from_settings(settings)
        with service_process("benchmark", settings) as (_, address):
            stub = benchmark_pb2_grpc.BenchmarkServiceStub(grpc.insecure_channel(address))
            for name in args.models.split(","):
                xml = build_ir(name, Path(tmp))
                variants = {"fp32": xml, **({"int8": quantize_random(xml)} if args.int8 else {})}
                for precision, path in variants.items():
                    stored = upload_ir(store, settings.bucket, path, f"bench/{name}-{precision}")
                    artifact = common_pb2.ModelArtifact(xml=ref_to_pb(stored.xml), bin=ref_to_pb(stored.bin))
                    service, app = [], []
                    for _ in range(args.pairs):
                        service.append(service_fps(stub, artifact, args.duration))
                        app.append(app_fps(path, args.duration))
                    figures["models"][f"{name}-{precision}"] = {
                        "service_fps_median": round(median(service), 2),
                        "benchmark_app_fps_median": round(median(app), 2),
                        "service_over_benchmark_app": round(median([s / a for s, a in zip(service, app)]), 3),
                    }
                if args.int8:
                    fp32, int8 = figures["models"][f"{name}-fp32"], figures["models"][f"{name}-int8"]
                    figures["models"][f"{name}-speedup"] = {
                        "service": round(int8["service_fps_median"] / fp32["service_fps_median"], 2),
                        "benchmark_app": round(int8["benchmark_app_fps_median"] / fp32["benchmark_app_fps_median"], 2),
                    }
    figures["target"] = "service_over_benchmark_app >= 0.97"
    emit(figures)


if __name__ == "__main__":
    main()
