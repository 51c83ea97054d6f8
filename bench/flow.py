"""The demo flow through the services against the same work done by direct library calls in one process.

Services side: SeaweedFS and the five services as real processes; through the gateway: import the real
yolov4-tiny and the 80 vtest frames, optimize (Performance preset), benchmark parent and child, evaluate the
child against the parent. Direct side: convert_darknet, nncf.quantize with the same validation (and the
calibration-set check and the analysis the quantizer's outcome holds), the benchmark
code on both models for the same duration, evaluate both and compare_predictions. Per-step wall times of both
sides, over --runs alternated pairs, and the median of the per-pair total ratios (target <= 1.10).

--model yolov4 measures full-size YOLOv4 (generated weights: the speed is real, the detections are not) through the
services instead: the parent benchmarked in f32 and in bf16, the automatic INT8 choice's calibration and its
child's throughput, each against OpenVINO's benchmark_app on the same IR (alternated) and the calibration against
one direct nncf.quantize call (Performance preset) on the same images; and every service's peak memory.

    .venv/bin/python bench/flow.py [--duration 5] [--runs 3] [--model yolov4-tiny|yolov4]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
import time
import tempfile
from pathlib import Path

import cv2
import nncf
import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import FRAMES, Steps, emit, median, peak_rss_mb, seaweed, services, tiny_flow  # noqa: E402
from services.common.analysis import analyze  # noqa: E402
from services.common.artifacts import download_ir  # noqa: E402
from services.common.object_store import ObjectStore  # noqa: E402
from services.common.pb import ir_from_pb  # noqa: E402
from services.accuracy.inference import evaluate  # noqa: E402
from services.common.measure import BenchConfig, benchmark  # noqa: E402
from services.common.tensor_cache import TensorCache  # noqa: E402
from workbench_runtime.detection import Decoder  # noqa: E402
from services.common.metrics import compare_predictions, parent_agreement  # noqa: E402
from workbench_runtime.preprocess import Preprocessing  # noqa: E402
from services.converter.darknet import convert_darknet  # noqa: E402
from services.quantizer.calibrate import QuantizeConfig, quantize  # noqa: E402
from services.quantizer.similarity import unlike_warning  # noqa: E402
from services.quantizer.validation import split, validation_for  # noqa: E402
from services.reference_models import yolov4_generated, yolov4_tiny  # noqa: E402
from workbench.v1 import common_pb2  # noqa: E402

BENCHMARK_APP = Path(sys.executable).with_name("benchmark_app")


def job_stages(job: common_pb2.Job) -> dict[str, float]:
    """Where a job's time went, as the gateway reports it in its terminal progress (job_<stage>_s), and its
    span in the catalog (submit to stored end)."""
    stages = {k[4:-2]: round(v, 3) for k, v in job.progress.metrics.items() if k.startswith("job_") and k.endswith("_s")}
    stages["submit_to_end"] = round((job.end_time.ToNanoseconds() - job.create_time.ToNanoseconds()) / 1e9, 3)
    return stages


def through_services(duration: float, jobs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """The flow's step times; jobs gets each step's jobs' stage timings."""
    steps = Steps()
    # each run starts with an empty tensor cache: a warm one from the run before would be work not done
    with tempfile.TemporaryDirectory() as cache, seaweed() as (_, settings), \
            services(dataclasses.replace(settings, tensor_cache_dir=cache)) as (client, _, _):
        wait_job = client.wait_job

        def recording_wait(job_id, on_event=None):
            marks: list[tuple[str, float]] = []  # (the worker's progress stage, when it began)

            def seen(event: common_pb2.JobEvent) -> None:
                if event.progress.stage and (not marks or marks[-1][0] != event.progress.stage):
                    marks.append((event.progress.stage, event.time.ToNanoseconds() / 1e9))
            job = wait_job(job_id, seen)
            stages = job_stages(job)
            ends = [t for _, t in marks[1:]] + [job.end_time.ToNanoseconds() / 1e9]
            stages["progress_stages"] = {}
            for (stage, begun), end in zip(marks, ends):
                stages["progress_stages"][stage] = round(stages["progress_stages"].get(stage, 0.0) + end - begun, 3)
            jobs.setdefault(steps.current, []).append(stages)
            return job

        client.wait_job = recording_wait
        tiny_flow(client, steps, duration)
    return steps.seconds


def direct(duration: float) -> dict[str, float]:
    files, steps = yolov4_tiny(), Steps()
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
        with steps.step("convert"):
            model = convert_darknet(files.cfg, files.weights, names=files.names)
            ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        with steps.step("dataset"):
            images = [cv2.imread(str(p)) for p in FRAMES]
        with steps.step("quantize"):
            preprocess = Preprocessing.from_model(model)
            calibration, judged = split(images, list(range(1, len(images) + 1)))
            validation = validation_for(model, judged, preprocess, None, lambda *a, **k: None)
            tensors = [preprocess(i)[0] for i in calibration]
            int8 = quantize(model, tensors, QuantizeConfig(preset="performance"), validation).model
            # what the service's outcome holds besides the model: the calibration-set check and the analysis
            unlike_warning(model, tensors, [preprocess(i)[0] for _, i in judged])
            ov.save_model(int8, str(Path(tmp) / "int8.xml"), compress_to_fp16=False)
            analyze(ov.Core().read_model(str(Path(tmp) / "int8.xml")))
        with steps.step("benchmark"):
            for candidate in (model, int8):
                benchmark(candidate.clone(), BenchConfig(duration_s=duration), preprocess.batch(images[:16]))
        with steps.step("compare"):
            paths = [(i + 1, p) for i, p in enumerate(FRAMES)]
            decoder = Decoder.from_model(model, confidence_threshold=0.001)
            cache = TensorCache(Path(tmp) / "tensors")  # decode once, as the services do within a run
            parent = evaluate(model, paths, decoder, preprocess, precision_hint="f32", cache=cache)
            child = evaluate(int8, paths, decoder, preprocess, cache=cache)
            compare_predictions(child, parent, reference_threshold=0.25)
            parent_agreement(child, parent, reference_threshold=0.25)
    return steps.seconds


def app_fps(xml: Path, seconds: float, precision: str = "") -> float:
    """benchmark_app's throughput on xml (THROUGHPUT hint, random inputs), in precision when given."""
    command = [str(BENCHMARK_APP), "-m", str(xml), "-t", str(max(1, round(seconds))), "-hint", "throughput"]
    out = subprocess.run(command + (["-infer_precision", precision] if precision else []),
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Throughput:\s+([\d.]+) FPS", out).group(1))


def yolov4(duration: float, pairs: int) -> dict:
    """Full-size YOLOv4 through the services against benchmark_app and a direct NNCF call, in one run."""
    files = yolov4_generated()
    figures: dict = {"model": "yolov4-416 (generated weights), 80 vtest frames", "benchmark_duration_s": duration}
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp, seaweed() as (_, settings), services(
            dataclasses.replace(settings, tensor_cache_dir=str(Path(tmp) / "tensors"))) as (client, settings, processes):
        work, store = Path(tmp), ObjectStore.from_settings(settings)
        model = client.wait_job(client.import_darknet("yolov4", files.cfg, files.weights, files.names).id)
        dataset = client.wait_job(client.import_dataset("vtest", FRAMES).id)
        project = client.create_project("yolov4", model_id=model.output.model_id,
                                        dataset_id=dataset.output.dataset_id)
        job = client.wait_job(client.optimize_project(project.id).id)  # the automatic choice
        auto_s = (job.end_time.ToNanoseconds() - job.create_time.ToNanoseconds()) / 1e9
        child = client.get_project(job.output.project_id)
        chosen = child.optimization.result

        irs = {name: download_ir(store, ir_from_pb(client.get_model(p.model_id).artifact), work / name)
               for name, p in (("parent", project), ("int8", child))}
        # the same calibration images and preprocessing as the service's: the alternate frames split() picks
        parent_model = ov.Core().read_model(str(irs["parent"]))
        preprocess = Preprocessing.from_model(parent_model)
        calibration, _ = split([cv2.imread(str(p)) for p in FRAMES], list(range(1, len(FRAMES) + 1)))
        tensors = [preprocess(i)[0] for i in calibration]
        started = time.perf_counter()
        nncf.quantize(parent_model, nncf.Dataset([t[None] for t in tensors]), subset_size=len(tensors),
                      preset=nncf.QuantizationPreset.PERFORMANCE)
        direct_s = time.perf_counter() - started

        sides: dict[str, dict[str, list[float]]] = {"services": {}, "benchmark_app": {}}
        cases = (("parent_f32", project.id, "parent", "f32"), ("parent_bf16", project.id, "parent", "bf16"),
                 ("int8", child.id, "int8", ""))
        for _ in range(pairs):  # alternated: the machine's drift falls on both sides alike
            for case, project_id, ir, precision in cases:
                done = client.wait_job(client.benchmark_project(project_id, common_pb2.BenchmarkConfig(
                    duration_seconds=duration, inference_precision=precision)).id)
                sides["services"].setdefault(case, []).append(done.output.benchmark.throughput_fps)
                sides["benchmark_app"].setdefault(case, []).append(app_fps(irs[ir], duration, precision))
        fps = {side: {case: round(median(values), 2) for case, values in cases_.items()}
               for side, cases_ in sides.items()}
        figures.update({
            "fps": fps,
            "services_over_benchmark_app": {case: round(fps["services"][case] / fps["benchmark_app"][case], 3)
                                            for case in fps["services"]},
            "int8_over_parent_f32": round(fps["services"]["int8"] / fps["services"]["parent_f32"], 2),
            "int8_over_parent_bf16": round(fps["services"]["int8"] / fps["services"]["parent_bf16"], 2),
            "automatic_choice": {
                "wall_s": round(auto_s, 1), "candidates": [
                    {"setting": c.description, "metric": round(c.metric, 4), "fps": round(c.throughput_fps, 1),
                     "chosen": c.chosen} for c in chosen.candidates],
                "metric": chosen.metric_name, "calibration_images": chosen.calibration_images},
            "direct_nncf_performance_s": round(direct_s, 1),
            "automatic_over_direct_performance": round(auto_s / direct_s, 2),
            "peak_rss_mb": {name: round(peak_rss_mb(process.pid)) for name, process in processes.items()},
            "pairs": pairs,
        })
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3, help="alternated pairs (yolov4: benchmark pairs)")
    parser.add_argument("--model", choices=("yolov4-tiny", "yolov4"), default="yolov4-tiny")
    parser.add_argument("--services-only", action="store_true", help="profile the services side alone (no ratio)")
    args = parser.parse_args()
    if args.model == "yolov4":
        emit(yolov4(args.duration, args.runs))
        return
    yolov4_tiny()  # fetch the weights before timing
    jobs: dict[str, list[dict[str, float]]] = {}
    if args.services_only:
        services_s = through_services(args.duration, jobs)
        emit({"services_s": services_s, "service_jobs_s": jobs})
        return
    pairs = []
    for _ in range(args.runs):  # alternated: the machine's drift falls on both sides alike
        direct_s = direct(args.duration)
        jobs = {}
        services_s = through_services(args.duration, jobs)
        pairs.append({"services_s": services_s, "direct_s": direct_s, "service_jobs_s": jobs,
                      "ratio": round(sum(services_s.values()) / sum(direct_s.values()), 3)})
    middle = sorted(pairs, key=lambda pair: pair["ratio"])[len(pairs) // 2]
    emit({
        "model": "yolov4-tiny (real weights), 80 vtest frames", "benchmark_duration_s": args.duration,
        "runs": args.runs, "ratios": [pair["ratio"] for pair in pairs],
        "median_run": middle,
        "services_total_s": round(sum(middle["services_s"].values()), 2),
        "direct_total_s": round(sum(middle["direct_s"].values()), 2),
        "services_over_direct": middle["ratio"],
        "target": "services_over_direct <= 1.10",
    })


if __name__ == "__main__":
    main()
