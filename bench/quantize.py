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

--auto-cost: the automatic choice's cost, before (the quantizer as of --before, its services/ extracted with
git archive) and after (this tree), each side in its own process per round, the sides alternating and the order
of the measurements within a process too. Each process times, on the same calibration and judged frames: one
direct nncf.quantize with the Performance preset, one Performance-preset quantization as the service runs it
(parent, calibration, judging, throughput) and the automatic choice (validation made, all candidates, choice).
Reported per side: medians of wall and CPU time (the process's, all threads), the ratios auto/direct and
auto/performance (each from one process, then the median), the winner and a digest of the chosen INT8 model (its IR less the generated node-name numbers).

    .venv/bin/python bench/quantize.py --auto-cost [--models yolov4-tiny,yolov4] [--rounds 3]
                                       [--yolov4-images 24] [--before REV]
"""

from __future__ import annotations

import argparse
import json
import subprocess
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
    parser.add_argument("--auto-cost", action="store_true", help="the automatic choice before and after")
    parser.add_argument("--before", default="c1d68bb~1", help="the quantizer to compare with (--auto-cost)")
    parser.add_argument("--yolov4-images", type=int, default=24,
                        help="full YOLOv4 calibrates on this many frames and is judged on as many (--auto-cost)")
    args = parser.parse_args()
    if args.auto_cost:
        emit(auto_cost(args))
        return
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


# One side of --auto-cost in its own process: argv = services root, model, frames (0: all), order of the two
# service-path measurements. The services package comes from the first folder, everything else from this repo.
AUTO_COST_SIDE = r"""
import hashlib, json, re, sys, tempfile, time
from pathlib import Path
services_root, name, frames, order = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path[:0] = [services_root, sys.argv[5]]
import cv2, nncf, openvino as ov
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
from services.converter.darknet import convert_darknet
from services.quantizer import calibrate
from services.quantizer.validation import model_input, split, validation_for
from services.reference_models import DATA, yolov4_generated, yolov4_tiny
from workbench_runtime.preprocess import Preprocessing
assert calibrate.__file__.startswith(services_root), calibrate.__file__
files = yolov4_tiny() if name == "yolov4-tiny" else yolov4_generated()
model = convert_darknet(files.cfg, files.weights, names=files.names)
preprocess = Preprocessing.from_model(model)
paths = sorted((DATA / "vtest").glob("*.jpg"))
paths = paths[:2 * frames] if frames else paths
inputs = [model_input(cv2.imread(str(p)), preprocess) for p in paths]
calibration, judged = split(inputs, list(range(len(inputs))))
tensors = [tensor for tensor, _, _ in calibration]
quiet = lambda *a, **k: None

def digest(m):
    with tempfile.TemporaryDirectory() as folder:
        ov.save_model(m, folder + "/m.xml", compress_to_fp16=False)
        xml = re.sub(r'name="([A-Za-z]+)_\d+"', r'name="\1_N"', Path(folder, "m.xml").read_text())
        return hashlib.sha256(xml.encode() + Path(folder, "m.bin").read_bytes()).hexdigest()[:16]

figures = {"calibration_images": len(tensors), "judged_images": len(judged)}
start, cpu = time.perf_counter(), time.process_time()
overflow = calibrate.OVERFLOW[calibrate.overflow_choices(calibrate.QuantizeConfig())[0]]
nncf.quantize(model.clone(), nncf.Dataset([t[None] for t in tensors]), preset=nncf.QuantizationPreset.PERFORMANCE,
              subset_size=len(tensors), advanced_parameters=AdvancedQuantizationParameters(overflow_fix=overflow))
figures["direct_s"], figures["direct_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
for preset in order.split(","):
    start, cpu = time.perf_counter(), time.process_time()
    validation = validation_for(model, judged, preprocess, None, quiet)
    outcome = calibrate.quantize(model, tensors, calibrate.QuantizeConfig(preset=preset), validation, quiet)
    figures[preset + "_s"], figures[preset + "_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
    figures[preset] = {"winner": next(c.description for c in outcome.candidates if c.chosen),
                       "model": digest(outcome.model), "metric_before": outcome.metric_before,
                       "candidates": [[c.description, round(c.metric, 4), round(c.throughput_fps, 1)]
                                      for c in outcome.candidates]}
print(json.dumps(figures))
"""


def auto_cost(args) -> dict:
    repo = Path(__file__).resolve().parents[1]
    before = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=repo, check=True, capture_output=True,
                            text=True).stdout.strip()
    figures: dict = {"before": before, "after": "this tree", "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-auto-cost-") as old:
        archive = subprocess.run(["git", "archive", before, "services"], cwd=repo, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        (Path(old) / "data").symlink_to(repo / "data")  # services.reference_models reads its folder's data/
        roots = {"before": old, "after": str(repo)}
        for name in args.models.split(","):
            frames = args.yolov4_images if name == "yolov4" else 0
            runs: dict = {"before": [], "after": []}
            for round_ in range(args.rounds):
                sides = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
                order = "performance,auto" if round_ % 2 == 0 else "auto,performance"
                for side in sides:
                    done = subprocess.run([sys.executable, "-c", AUTO_COST_SIDE, roots[side], name, str(frames), order,
                                           str(repo)], capture_output=True, text=True)
                    if done.returncode:
                        raise SystemExit(f"{side} {name}: {done.stderr[-3000:]}")
                    runs[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
                    print(name, side, round_, json.dumps(runs[side][-1]), file=sys.stderr, flush=True)
            figures["models"][name] = {side: summary(measured) for side, measured in runs.items()}
            ours, theirs = figures["models"][name]["after"], figures["models"][name]["before"]
            figures["models"][name]["same_winner"] = ours["winner"] == theirs["winner"]
            figures["models"][name]["same_chosen_model"] = ours["chosen_model"] == theirs["chosen_model"]
            figures["models"][name]["auto_after_over_before"] = round(ours["auto_s"] / theirs["auto_s"], 3)
    figures["targets"] = {"auto_over_performance": "<= 2", "same_winner": True}
    return figures


def summary(measured: list[dict]) -> dict:
    """Medians of the rounds; ratios within each process first; the winner and model of every round."""
    winners = {m["auto"]["winner"] for m in measured}
    models = {m["auto"]["model"] for m in measured}
    return {
        "calibration_images": measured[0]["calibration_images"], "judged_images": measured[0]["judged_images"],
        "rounds": len(measured),
        "direct_performance_s": round(median([m["direct_s"] for m in measured]), 2),
        "performance_s": round(median([m["performance_s"] for m in measured]), 2),
        "auto_s": round(median([m["auto_s"] for m in measured]), 2),
        "auto_over_direct_performance": round(median([m["auto_s"] / m["direct_s"] for m in measured]), 2),
        "auto_over_performance": round(median([m["auto_s"] / m["performance_s"] for m in measured]), 2),
        # CPU time of the process (all its threads): less moved by the other work on a shared machine
        "cpu_s": {k: round(median([m[k + "_cpu_s"] for m in measured]), 2) for k in ("direct", "performance", "auto")},
        "cpu_auto_over_direct_performance": round(median([m["auto_cpu_s"] / m["direct_cpu_s"] for m in measured]), 2),
        "cpu_auto_over_performance": round(median([m["auto_cpu_s"] / m["performance_cpu_s"] for m in measured]), 2),
        "winner": winners.pop() if len(winners) == 1 else sorted(winners),
        "chosen_model": models.pop() if len(models) == 1 else sorted(models),
        "performance_model": measured[0]["performance"]["model"],
        "candidates": measured[-1]["auto"]["candidates"],
    }


if __name__ == "__main__":
    main()
