"""INT8 calibration through the quantizer service against a direct nncf.quantize call on the same images.

For each model: the IR and the vtest frames go to a throwaway S3; the quantizer service (a real process)
quantizes with an explicit Performance preset, then with the automatic choice; the direct call quantizes
the same calibration half of the frames, preprocessed by the same code, with the same preset and overflow
fix. Reported: the service's
whole wall time, its calibration step alone (between its "statistics" and "validate" progress messages),
the direct call's time, the INT8 throughput of both models measured alternately with the benchmark code,
the automatic choice's candidates and its pick's throughput over f32 inference of the parent (the FP32
figure on CPUs that would otherwise run it in bf16), and the quantizer process's peak memory.

    .venv/bin/python bench/quantize.py [--models yolov4-tiny,yolov4] [--seconds 5] [--rounds 3]
                                       [--accuracy-aware 0.03]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import grpc
import nncf
import openvino as ov
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, median, peak_rss_mb, seaweed, service_process  # noqa: E402
from services.common.measure import BenchConfig, benchmark  # noqa: E402
from services.common.artifacts import StoredIR, download_ir, upload_ir  # noqa: E402
from services.common.object_store import ObjectStore  # noqa: E402
from services.common.pb import ref_from_pb, ref_to_pb  # noqa: E402
from workbench_runtime.preprocess import Preprocessing  # noqa: E402
from services.converter.darknet import convert_darknet  # noqa: E402
from services.quantizer.calibrate import OVERFLOW, QuantizeConfig, overflow_choices  # noqa: E402
from services.quantizer.validation import split  # noqa: E402
from services.reference_models import DATA, yolov4_generated, yolov4_tiny  # noqa: E402
from workbench.v1 import accuracy_pb2, accuracy_pb2_grpc, common_pb2, quantizer_pb2, quantizer_pb2_grpc  # noqa: E402

FRAMES = sorted((DATA / "vtest").glob("*.jpg"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="yolov4-tiny,yolov4")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accuracy-aware", type=float, default=0.0, metavar="MAX_DROP",
                        help="also run AccuracyAware with this absolute maximum drop")
    args = parser.parse_args()
    figures: dict = {"frames": len(FRAMES), "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp, seaweed() as (_, settings):
        work, store, bucket = Path(tmp), ObjectStore.from_settings(settings), settings.bucket
        sources = [store.put_file(bucket, f"frames/{p.name}", p) for p in FRAMES]
        with service_process("accuracy", settings) as (_, accuracy_address), \
                service_process("quantizer", settings) as (quantizer, quantizer_address):
            accuracy = accuracy_pb2_grpc.AccuracyServiceStub(grpc.insecure_channel(accuracy_address))
            *_, last = accuracy.NormalizeDataset(accuracy_pb2.NormalizeDatasetRequest(
                sources=[ref_to_pb(s) for s in sources], file_names=[p.name for p in FRAMES],
                output_bucket=bucket, output_prefix="datasets/vtest/"))
            dataset = last.dataset
            stub = quantizer_pb2_grpc.QuantizerServiceStub(grpc.insecure_channel(quantizer_address))
            for name in args.models.split(","):
                figures["models"][name] = measure(name, work, store, bucket, stub, dataset, args)
            figures["quantizer_peak_rss_mb"] = round(peak_rss_mb(quantizer.pid), 1)
    figures["targets"] = {"service_calibration_over_direct": "<= 1.1", "service_int8_fps_over_direct": ">= 0.98"}
    emit(figures)


def measure(name, work: Path, store, bucket, stub, dataset, args) -> dict:
    files = yolov4_tiny() if name == "yolov4-tiny" else yolov4_generated()
    xml = work / name / "model.xml"
    model = convert_darknet(files.cfg, files.weights, names=files.names)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    stored = upload_ir(store, bucket, xml, f"bench/{name}")
    artifact = common_pb2.ModelArtifact(xml=ref_to_pb(stored.xml), bin=ref_to_pb(stored.bin))
    start = time.perf_counter()
    result, events = quantize(stub, artifact, dataset, bucket, quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE)
    service_s = time.perf_counter() - start
    # the calibration step: from the "statistics" message to the next message (judging the candidate)
    begin = next(i for i, (stage, _) in enumerate(events) if stage == "statistics")
    calibration_s = events[begin + 1][1] - events[begin][1]
    service_xml = download_ir(store, StoredIR(ref_from_pb(result.model.xml, "xml"), ref_from_pb(result.model.bin, "bin")),
                              work / name / "service-int8")

    # the direct call: the same calibration half of the frames, the same preprocessing and parameters
    preprocess = Preprocessing.from_model(model)
    calibration, _ = split([cv2.imread(str(p)) for p in FRAMES], list(range(len(FRAMES))))
    data = nncf.Dataset([preprocess(image)[0][None] for image in calibration])
    overflow = overflow_choices(QuantizeConfig())[0]
    start = time.perf_counter()
    direct = nncf.quantize(ov.Core().read_model(str(xml)), data, preset=nncf.QuantizationPreset.PERFORMANCE,
                           subset_size=len(calibration),
                           advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OVERFLOW[overflow]))
    direct_s = time.perf_counter() - start
    direct_xml = work / name / "direct-int8.xml"
    ov.save_model(direct, str(direct_xml), compress_to_fp16=False)

    # the automatic choice: every candidate it measured, and its pick against true f32 inference
    auto, _ = quantize(stub, artifact, dataset, bucket, quantizer_pb2.QUANTIZATION_PRESET_UNSPECIFIED)
    aware = {}
    if args.accuracy_aware:
        start = time.perf_counter()
        controlled, _ = quantize(stub, artifact, dataset, bucket, quantizer_pb2.QUANTIZATION_PRESET_UNSPECIFIED,
                                 method=quantizer_pb2.QUANTIZATION_METHOD_ACCURACY_AWARE, max_drop=args.accuracy_aware)
        aware = {"accuracy_aware": {
            "max_drop": args.accuracy_aware, "seconds": round(time.perf_counter() - start, 1),
            "metric_before": round(controlled.metric_before, 4), "metric_after": round(controlled.metric_after, 4),
            "drop": round(controlled.metric_before - controlled.metric_after, 4),
            "fps": round(controlled.candidates[-1].throughput_fps, 1), "fp_layers": len(controlled.fp_layers),
            "warnings": list(controlled.warnings)}}
    auto_xml = download_ir(store, StoredIR(ref_from_pb(auto.model.xml, "xml"), ref_from_pb(auto.model.bin, "bin")),
                           work / name / "auto-int8")

    service_fps, direct_fps, fp32_fps, f32_fps, auto_fps = [], [], [], [], []
    runs = ((service_xml, service_fps, ""), (direct_xml, direct_fps, ""), (xml, fp32_fps, ""),
            (xml, f32_fps, "f32"), (auto_xml, auto_fps, ""))
    for _ in range(args.rounds):
        for path, sink, precision in runs:
            config = BenchConfig(duration_s=args.seconds, inference_precision=precision)
            sink.append(benchmark(ov.Core().read_model(str(path)), config).throughput_fps)
    return {
        "service_total_s": round(service_s, 2),
        "service_calibration_s": round(calibration_s, 2),
        "direct_nncf_s": round(direct_s, 2),
        "service_calibration_over_direct": round(calibration_s / direct_s, 3),
        "calibration_images": result.calibration_images,
        "parent_agreement": round(result.metric_after, 4),
        "fp32_fps": round(median(fp32_fps), 1),
        "service_int8_fps": round(median(service_fps), 1),
        "direct_int8_fps": round(median(direct_fps), 1),
        "service_int8_fps_over_direct": round(median([s / d for s, d in zip(service_fps, direct_fps)]), 3),
        "int8_over_fp32": round(median(service_fps) / median(fp32_fps), 2),
        "f32_fps": round(median(f32_fps), 1),
        "auto_candidates": [{"setting": c.description, "parent_agreement": round(c.metric, 4),
                             "fps": round(c.throughput_fps, 1), "chosen": c.chosen} for c in auto.candidates],
        "auto_parent_agreement": round(auto.metric_after, 4),
        "auto_int8_fps": round(median(auto_fps), 1),
        "auto_int8_over_f32": round(median([a / f for a, f in zip(auto_fps, f32_fps)]), 2),
        "auto_int8_over_default_precision": round(median([a / f for a, f in zip(auto_fps, fp32_fps)]), 2),
        **aware,
    }


def quantize(stub, artifact, dataset, bucket, preset, **config) -> tuple[quantizer_pb2.QuantizationResult, list]:
    """One Quantize call: its result and its progress stages with their times."""
    request = quantizer_pb2.QuantizeRequest(model=artifact, dataset=dataset, output_bucket=bucket,
                                            config=quantizer_pb2.QuantizationConfig(preset=preset, **config))
    events = []
    for response in stub.Quantize(request, timeout=3600):
        if response.HasField("progress"):
            events.append((response.progress.stage, time.perf_counter()))
        else:
            result = response.result
    return result, events


if __name__ == "__main__":
    main()
