"""The demo flow through the services against the same work done by direct library calls in one process.

Services side: SeaweedFS and the five services as real processes; through the gateway: import the real
yolov4-tiny and the 80 vtest frames, optimize (Performance preset), benchmark parent and child, evaluate the
child against the parent. Direct side: convert_darknet, nncf.quantize with the same validation, the benchmark
code on both models for the same duration, evaluate both and compare_predictions. Per-step wall times of both
sides and the total ratio (target <= 1.15).

    .venv/bin/python bench/flow.py [--duration 5]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tempfile
from pathlib import Path

import cv2
import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Steps, emit, seaweed, service_process  # noqa: E402
from services.accuracy.inference import evaluate  # noqa: E402
from services.common.measure import BenchConfig, benchmark  # noqa: E402
from services.common.tensor_cache import TensorCache  # noqa: E402
from workbench_runtime.detection import Decoder  # noqa: E402
from services.common.metrics import compare_predictions, parent_agreement  # noqa: E402
from workbench_runtime.preprocess import Preprocessing  # noqa: E402
from services.converter.darknet import convert_darknet  # noqa: E402
from services.quantizer.calibrate import QuantizeConfig, quantize  # noqa: E402
from services.quantizer.validation import split, validation_for  # noqa: E402
from services.reference_models import DATA, yolov4_tiny  # noqa: E402
from workbench.client import WorkbenchClient  # noqa: E402
from workbench.v1 import common_pb2, quantizer_pb2  # noqa: E402

FRAMES = sorted((DATA / "vtest").glob("*.jpg"))


def job_stages(job: common_pb2.Job) -> dict[str, float]:
    """Where a job's time went, as the gateway reports it in its terminal progress (job_<stage>_s), and its
    span in the catalog (submit to stored end)."""
    stages = {k[4:-2]: round(v, 3) for k, v in job.progress.metrics.items() if k.startswith("job_") and k.endswith("_s")}
    stages["submit_to_end"] = round((job.end_time.ToNanoseconds() - job.create_time.ToNanoseconds()) / 1e9, 3)
    return stages


def through_services(duration: float, jobs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """The flow's step times; jobs gets each step's jobs' stage timings."""
    files, steps = yolov4_tiny(), Steps()
    # each run starts with an empty tensor cache: a warm one from the run before would be work not done
    with seaweed() as (_, settings), tempfile.TemporaryDirectory() as cache, contextlib.ExitStack() as stack:
        settings = dataclasses.replace(settings, tensor_cache_dir=cache)
        addresses = {}
        for name in ("converter", "quantizer", "benchmark", "accuracy"):
            _, addresses[name] = stack.enter_context(service_process(name, settings))
        settings = settings.__class__(**{**vars(settings), **{f"{k}_addr": v for k, v in addresses.items()}})
        _, gateway = stack.enter_context(service_process("gateway", settings))
        client = WorkbenchClient(gateway, timeout=120)
        wait_job, current = client.wait_job, ["setup"]

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
            jobs.setdefault(current[0], []).append(stages)
            return job

        client.wait_job = recording_wait
        with steps.step("convert"):
            current[0] = "convert"
            model = client.wait_job(client.import_darknet("tiny", files.cfg, files.weights, files.names).id)
        with steps.step("dataset"):
            current[0] = "dataset"
            dataset = client.wait_job(client.import_dataset("vtest", FRAMES).id)
        project = client.create_project("tiny", model_id=model.output.model_id, dataset_id=dataset.output.dataset_id)
        with steps.step("quantize"):
            current[0] = "quantize"
            child = client.wait_job(client.optimize_project(project.id, quantizer_pb2.QuantizationConfig(
                preset=quantizer_pb2.QUANTIZATION_PRESET_PERFORMANCE)).id).output.project_id
        with steps.step("benchmark"):
            current[0] = "benchmark"
            for project_id in (project.id, child):
                client.wait_job(client.benchmark_project(project_id, common_pb2.BenchmarkConfig(
                    duration_seconds=duration)).id)
        with steps.step("compare"):
            current[0] = "compare"
            client.wait_job(client.evaluate_project(child).id)
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
            int8 = quantize(model, [preprocess(i)[0] for i in calibration], QuantizeConfig(preset="performance"),
                            validation).model
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--services-only", action="store_true", help="profile the services side alone (no ratio)")
    args = parser.parse_args()
    yolov4_tiny()  # fetch the weights before timing
    jobs: dict[str, list[dict[str, float]]] = {}
    if args.services_only:
        services_s = through_services(args.duration, jobs)
        emit({"services_s": services_s, "service_jobs_s": jobs})
        return
    direct_s = direct(args.duration)
    services_s = through_services(args.duration, jobs)
    emit({
        "model": "yolov4-tiny (real weights), 80 vtest frames", "benchmark_duration_s": args.duration,
        "services_s": services_s, "direct_s": direct_s, "service_jobs_s": jobs,
        "services_total_s": round(sum(services_s.values()), 2), "direct_total_s": round(sum(direct_s.values()), 2),
        "services_over_direct": round(sum(services_s.values()) / sum(direct_s.values()), 3),
        "target": "services_over_direct <= 1.15",
    })


if __name__ == "__main__":
    main()
