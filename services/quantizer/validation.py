"""How the quantizer judges a candidate INT8 model, on images it was not calibrated on.

With annotations whose classes match the model's labels: COCO AP@[.5:.95] against them. Without:
the parent agreement, mAP@0.5 of the candidate's predictions (confidence floor 0.001) against the
parent's predictions above the report threshold taken as ground truth; so users without annotated
data can still bound the loss. Both come from services.common.metrics, as the accuracy service's do.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import openvino as ov

from workbench_runtime.detection import Decoder, Detections
from workbench_runtime.errors import FailedPrecondition
from services.common.labels import map_labels, model_labels_from_info
from services.common.measure import BenchConfig, benchmark, waits_only
from services.common.metrics import coco_metrics, parent_agreement
from workbench_runtime.model_info import model_info_strings
from workbench_runtime.preprocess import Preprocessing, Transform
from services.common.progress import Report
from services.quantizer.calibrate import Validation

CONFIDENCE_FLOOR = 0.001  # threshold-free metrics rank every box
FPS_SECONDS = 3.0
MEASURER = "the quantizer"  # how a measurement waiting for this machine's measuring turn hears of ours


def split(images: list[np.ndarray], ids: list[int]) -> tuple[list[np.ndarray], list[tuple[int, np.ndarray]]]:
    """Alternate images between calibration and judging, so both see the whole set; tiny sets do both."""
    if len(images) < 4:
        return images, list(zip(ids, images))
    return images[0::2], list(zip(ids[1::2], images[1::2]))


def model_input(image: np.ndarray | tuple, preprocess: Preprocessing) -> tuple[np.ndarray, Transform, tuple[int, int]]:
    """(tensor [3, H, W], transform, (width, height)) of a BGR picture, or the same triple made before
    (services.common.tensor_cache: decoded and preprocessed once, then reused)."""
    if isinstance(image, tuple):
        return image
    tensor, transform = preprocess(image)
    return tensor, transform, (image.shape[1], image.shape[0])


def validation_for(model: ov.Model, judged: list[tuple[int, np.ndarray | tuple]], preprocess: Preprocessing,
                   annotations: Mapping | None, report: Report) -> Validation | None:
    """None when the model is no detector this service decodes (then candidates are not compared).
    judged: (image id, BGR picture or its model_input triple); every candidate's validation reads the same
    inputs, made once."""
    try:
        decoder = Decoder.from_model(model, confidence_threshold=CONFIDENCE_FLOOR)
    except FailedPrecondition:
        return None
    inputs = [(image_id, *model_input(image, preprocess)) for image_id, image in judged]

    def predict(compiled: ov.CompiledModel) -> dict[int, Detections]:
        request, found = compiled.create_infer_request(), {}
        for image_id, tensor, transform, size in inputs:
            outputs = request.infer({0: tensor[None]})
            found[image_id] = decoder({port.any_name: outputs[port] for port in compiled.outputs}, transform, size)
        return found

    def fps(candidate: ov.Model) -> float:
        return candidate_fps(candidate, report)

    metric = _coco_metric(model, annotations, [i for i, *_ in inputs], predict)
    if metric is not None:
        return Validation("coco_map", metric, fps)
    report("validate", 0.02, f"parent predictions on {len(inputs)} images")  # after the download (up to 0.02)
    parent = predict(ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))
    reference = float(model_info_strings(model).get("confidence_threshold", 0.25))

    def agreement(compiled: ov.CompiledModel) -> float:
        return parent_agreement(predict(compiled), parent, reference_threshold=reference)

    # the parent's own agreement from the predictions just made: what judging it again would give
    return Validation("parent_agreement", agreement, fps,
                      parent=parent_agreement(parent, parent, reference_threshold=reference))


def candidate_fps(candidate: ov.Model, report: Report = lambda *a, **k: None) -> float:
    """A candidate's throughput from the shared measuring loop. It takes this machine's measuring turn, so it
    gives way to a benchmark service measuring on the same machine (and that one to it): the wait is reported
    ("waiting for the benchmark service's measurement to finish"), the loop's own progress is not."""
    return benchmark(candidate.clone(), BenchConfig(duration_s=FPS_SECONDS), report=waits_only(report),
                     who=MEASURER).throughput_fps


def _coco_metric(model: ov.Model, annotations: Mapping | None, image_ids: list[int], predict):
    if not annotations or not annotations.get("annotations"):
        return None
    mapping = map_labels(model_labels_from_info(model_info_strings(model)), annotations.get("categories", []))
    if not mapping.model_to_dataset:
        return None
    wanted = set(image_ids)
    ground_truth = {
        "images": [i for i in annotations["images"] if i["id"] in wanted],
        "annotations": [a for a in annotations["annotations"] if a["image_id"] in wanted],
        "categories": annotations["categories"],
    }

    def metric(compiled: ov.CompiledModel) -> float:
        results = []
        for image_id, found in predict(compiled).items():
            for box, score, label in zip(found.boxes, found.scores, found.labels):
                if int(label) in mapping.model_to_dataset:
                    x1, y1, x2, y2 = (float(v) for v in box)
                    results.append({"image_id": image_id, "category_id": mapping.model_to_dataset[int(label)],
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
        return coco_metrics(ground_truth, results).ap

    return metric
