"""Images per second of a whole accuracy evaluation against the benchmark throughput of the same model.

Evaluation: services.accuracy.inference.evaluate over the 80 vtest frames repeated (--images, distinct image
ids), read as the accuracy service reads a dataset's images: objects in a throwaway SeaweedFS bucket, known by
the sha256 a manifest records (StoredImage). That is fetching, preprocessing, inference, decoding (confidence
floor 0.001, as COCO evaluations use), then the metrics the accuracy service computes: COCO metrics
(pycocotools' numbers, by faster-coco-eval) against a reference (the FP32 model's detections >= 0.25, f32
inference, made once), parent agreement and the per-image comparison.
Baseline: services.common.measure.benchmark on the same model, device and hint (CPU, THROUGHPUT, the
runtime's default precision), fed the same preprocessed frames, for about as long as one evaluation.
The two alternate, --runs times each; figures are medians. The evaluation rate counts from the first
image on (compilation excluded, as the benchmark excludes it) to the metrics' end; "with compile" adds it.

Three evaluations a run, each against the same benchmark figure: "uncached" fetches, decodes and preprocesses
every image (no tensor cache, as before the cache), "first" fills an empty services.common.tensor_cache directory
(the first evaluation of a dataset; the vtest frames repeat, so only the first 80 images are misses: see
first_cache_misses), "cached" reads that filled cache without fetching (every later evaluation of the same
dataset, input size and preprocessing: the child's, a re-run). The cached evaluation's predictions must equal the
uncached one's byte for byte (checked, "bit_identical"). The target is for the cached evaluation.

FP32 is the converted yolov4-tiny; INT8 is it quantized with NNCF (default preset, 46 calibration
frames) when nncf is importable, else skipped with a note.

    .venv/bin/python bench/accuracy_throughput.py [--runs 3] [--images 400]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, median, seaweed  # noqa: E402
from services import reference_models  # noqa: E402
from services.accuracy.inference import evaluate, to_coco_results  # noqa: E402
from services.common.object_store import ObjectStore  # noqa: E402
from services.common.tensor_cache import StoredImage, TensorCache  # noqa: E402
from services.common.measure import BenchConfig, benchmark, conditions  # noqa: E402
from workbench_runtime.detection import Decoder  # noqa: E402
from services.common.metrics import coco_metrics, compare_predictions, parent_agreement  # noqa: E402
from workbench_runtime.model_info import read_model_info  # noqa: E402
from workbench_runtime.preprocess import Preprocessing  # noqa: E402
from services.converter.darknet import convert_darknet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FRAMES = sorted((REPO / "data" / "vtest").glob("*.jpg"))
REFERENCE_THRESHOLD = 0.25
TARGET_RATIO = 0.9  # of the benchmark FPS, for the cached evaluation


def int8_model(model: ov.Model, preprocessing: Preprocessing) -> tuple[ov.Model | None, str]:
    try:
        import nncf
    except ImportError:
        return None, "nncf is not installed: INT8 skipped"
    data = [preprocessing(cv2.imread(str(p)))[0][None] for p in FRAMES[::2] + sorted((REPO / "data" / "images")
                                                                                     .glob("*.jpg"))]
    started = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data))
    return quantized, f"nncf {nncf.__version__}, {len(data)} calibration images, {time.perf_counter() - started:.1f} s"


def reference(model: ov.Model, images, preprocessing) -> tuple[dict, dict]:
    """The FP32 model's detections (f32 inference) as the parent's predictions and as COCO ground truth."""
    parent = evaluate(model, images, Decoder.from_model(model, confidence_threshold=0.001), preprocessing,
                      precision_hint="f32")
    labels = range(len(read_model_info(model).labels))
    gt = {"images": [{"id": i, "file_name": image.name, "width": 768, "height": 576} for i, image in images],
          "categories": [{"id": k + 1, "name": str(k)} for k in labels],
          "annotations": [dict(a, id=n + 1, area=a["bbox"][2] * a["bbox"][3], iscrowd=0) for n, a in enumerate(
              to_coco_results(parent, {k: k + 1 for k in labels}, min_score=REFERENCE_THRESHOLD))]}
    return parent, gt


def fingerprint(found: dict) -> str:
    """sha256 of every image's boxes, scores and labels, in order: equal only when bit-identical."""
    digest = hashlib.sha256()
    for image_id, d in found.items():
        digest.update(f"{image_id}:{len(d)}".encode())
        for part in (d.boxes, d.scores, d.labels):
            digest.update(part.tobytes())
    return digest.hexdigest()


def one_evaluation(model: ov.Model, images, preprocessing, parent: dict, gt: dict,
                   cache: TensorCache | None = None) -> dict:
    metrics: dict = {}
    misses = cache.misses if cache else 0
    started = time.perf_counter()
    found = evaluate(model, images, Decoder.from_model(model, confidence_threshold=0.001), preprocessing,
                     report=lambda stage, fraction, message="", **m: metrics.update(m), cache=cache)
    evaluated = time.perf_counter()
    coco = coco_metrics(gt, to_coco_results(found, {c["id"] - 1: c["id"] for c in gt["categories"]}))
    agreement = parent_agreement(found, parent, reference_threshold=REFERENCE_THRESHOLD)
    comparison = compare_predictions(found, parent, reference_threshold=REFERENCE_THRESHOLD)
    ended = time.perf_counter()
    inference_s = evaluated - started - metrics["compile_seconds"]
    return {"images_per_s": len(images) / (inference_s + ended - evaluated),
            "images_per_s_with_compile": len(images) / (ended - started),
            "pipeline_images_per_s": metrics["images_per_second"],
            "metrics_s": ended - evaluated, "compile_s": metrics["compile_seconds"],
            "map": coco.ap, "map50": coco.ap50, "agreement": agreement, "f1": comparison.totals.f1,
            "detections": sum(len(d) for d in found.values()), "cache_misses": cache.misses - misses if cache else None,
            "predictions": fingerprint(found)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args()
    files = reference_models.yolov4_tiny()
    fp32 = convert_darknet(files.cfg, files.weights, names=files.names)
    preprocessing = Preprocessing.from_model(fp32)
    with seaweed() as (_, settings):
        store = ObjectStore.from_settings(settings)
        stored = []
        for path in FRAMES:
            data = path.read_bytes()
            store.put_bytes("bench", f"images/{path.name}", data)
            stored.append(StoredImage(store, "bench", f"images/{path.name}", hashlib.sha256(data).hexdigest()))
        measure(args, fp32, preprocessing, [(i + 1, stored[i % len(stored)]) for i in range(args.images)])


def measure(args, fp32: ov.Model, preprocessing: Preprocessing, images: list) -> None:
    frames = np.stack([preprocessing(cv2.imread(str(p)))[0] for p in FRAMES])
    parent, gt = reference(fp32, images, preprocessing)
    int8, int8_note = int8_model(fp32, preprocessing)

    figures: dict = {"images": args.images, "runs": args.runs, "target_ratio": TARGET_RATIO, "int8_model": int8_note,
                     "conditions": conditions(ov.Core(), "CPU")}
    for name, model in (("fp32", fp32), ("int8", int8)):
        if model is None:
            continue
        evaluations, fps, kinds = [], [], {"uncached": [], "first": [], "cached": []}
        for _ in range(args.runs):
            kinds["uncached"].append(one_evaluation(model, images, preprocessing, parent, gt))
            with tempfile.TemporaryDirectory(prefix="tensor-cache-") as where:
                cache = TensorCache(where)
                kinds["first"].append(one_evaluation(model, images, preprocessing, parent, gt, cache))
                kinds["cached"].append(one_evaluation(model, images, preprocessing, parent, gt, cache))
            evaluations.append(kinds["cached"][-1])
            duration = args.images / evaluations[-1]["images_per_s"]
            result = benchmark(model, BenchConfig(device="CPU", hint="throughput", duration_s=duration), frames)
            fps.append(result.throughput_fps)
            print(f"{name}: evaluation uncached {kinds['uncached'][-1]['images_per_s']:.1f}, first "
                  f"{kinds['first'][-1]['images_per_s']:.1f}, cached {evaluations[-1]['images_per_s']:.1f} img/s, "
                  f"benchmark {result.throughput_fps:.1f} fps ({result.inference_precision}, "
                  f"{result.runtime_infer_requests} requests)", file=sys.stderr)
        evaluation_ips = median([e["images_per_s"] for e in evaluations])
        per_kind = {kind: median([e["images_per_s"] for e in runs]) for kind, runs in kinds.items()}
        figures[name] = {
            "uncached_images_per_s": round(per_kind["uncached"], 1),
            "uncached_ratio": round(per_kind["uncached"] / median(fps), 3),
            "first_images_per_s": round(per_kind["first"], 1),
            "first_ratio": round(per_kind["first"] / median(fps), 3),
            "first_cache_misses": kinds["first"][-1]["cache_misses"],
            "cached_cache_misses": kinds["cached"][-1]["cache_misses"],
            # each run's first and cached evaluations against its uncached one, byte for byte
            "bit_identical": all(kinds[kind][n]["predictions"] == kinds["uncached"][n]["predictions"]
                                 for kind in ("first", "cached") for n in range(args.runs)),
            "evaluation_images_per_s": round(evaluation_ips, 1),
            "evaluation_images_per_s_with_compile": round(median([e["images_per_s_with_compile"]
                                                                  for e in evaluations]), 1),
            "pipeline_images_per_s": round(median([e["pipeline_images_per_s"] for e in evaluations]), 1),
            "metrics_s": round(median([e["metrics_s"] for e in evaluations]), 3),
            "benchmark_fps": round(median(fps), 1),
            "ratio": round(evaluation_ips / median(fps), 3),
            "inference_precision": result.inference_precision,
            "map_vs_fp32_reference": round(evaluations[-1]["map"], 4),
            "map50_vs_fp32_reference": round(evaluations[-1]["map50"], 4),
            "parent_agreement": round(evaluations[-1]["agreement"], 4),
            "comparison_f1": round(evaluations[-1]["f1"], 4),
            "detections": evaluations[-1]["detections"],
            "disturbed": result.conditions.get("disturbed_reason", ""),
        }
        figures[name]["meets_target"] = figures[name]["ratio"] >= TARGET_RATIO
    emit(figures)


if __name__ == "__main__":
    main()
