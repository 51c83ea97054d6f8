"""Is the calibration set like the images the model will be judged on?

Calibration only sees activation ranges of its own images; on unlike images the ranges clip. Both sets
are described by the parent's own features (the deepest convolution's output, averaged over space) and
compared with the energy coefficient (Székely's energy distance over twice the mean cross distance): 0
for sets drawn alike, towards 1 for disjoint ones. Measured on yolov4-tiny: alternate vtest frames
0.016, the first half of the video against the second 0.21, six unrelated photographs against vtest 0.49.
"""

from __future__ import annotations

import numpy as np
import openvino as ov

UNLIKE_ABOVE = 0.3
SAMPLE = 64  # images per set: enough for the coefficient, cheap even for full YOLOv4


def features(model: ov.Model, tensors: list[np.ndarray]) -> np.ndarray | None:
    """One vector per image; None when the model has no 4D convolution to probe."""
    found = _features(model, [tensors])
    return None if found is None else found[0]


def _features(model: ov.Model, sets: list[list[np.ndarray]]) -> list[np.ndarray] | None:
    """features() of each set, the probe compiled once."""
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"
             and op.get_output_partial_shape(0).rank.get_length() == 4
             and op.get_output_partial_shape(0)[2].is_static and op.get_output_partial_shape(0)[3].is_static]
    if not convs or not all(sets):
        return None
    area = lambda op: op.get_output_partial_shape(0)[2].get_length() * op.get_output_partial_shape(0)[3].get_length()
    deepest = min(convs, key=area)  # the first convolution at the smallest resolution: the backbone's end
    probe = ov.Core().compile_model(ov.Model([deepest.output(0)], model.get_parameters()), "CPU")
    request = probe.create_infer_request()
    found = []
    for tensors in sets:
        picks = np.linspace(0, len(tensors) - 1, min(SAMPLE, len(tensors))).round().astype(int)
        found.append(np.stack([request.infer({0: tensors[i][None]})[0].mean(axis=(0, 2, 3)) for i in picks]))
    return found


def energy_coefficient(x: np.ndarray, y: np.ndarray) -> float:
    def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a[:, None] - b[None], axis=2).mean())

    cross = mean_distance(x, y)
    if cross == 0:
        return 0.0
    return max(0.0, (2 * cross - mean_distance(x, x) - mean_distance(y, y)) / (2 * cross))


def unlike_warning(model: ov.Model, calibration: list[np.ndarray], evaluation: list[np.ndarray]) -> str | None:
    found = _features(model, [calibration, evaluation])
    if found is None:
        return None
    coefficient = energy_coefficient(*found)
    if coefficient <= UNLIKE_ABOVE:
        return None
    return (f"the calibration images are unlike the images the model is judged on (energy coefficient "
            f"{coefficient:.2f} > {UNLIKE_ABOVE} of the model's own features): INT8 ranges may clip on real "
            "inputs; calibrate on images from the deployment")
