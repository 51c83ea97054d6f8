"""Ultralytics YOLO layouts: [1, 4+C, A] (YOLOv8 and kin) and [1, A, 5+C] (YOLOv5), on hand-made outputs and on a
real YOLOv8n export (nudenet's 320n.onnx, Ultralytics 8.2.46) against OpenCV's DNN module and a decode written
here from Ultralytics' formulas."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import openvino as ov
import pytest

from services import reference_models
from services.converter import ultralytics
from services.converter.convert import ModelFiles, load
from tests.harness import ONE_CALIBRATION
from workbench_runtime.detection import AnchorFreeDecoder, BoxesDecoder, DecodeSettings, Decoder
from workbench_runtime.errors import FailedPrecondition
from workbench_runtime.model_info import model_info_strings, write_model_info
from workbench_runtime.preprocess import Preprocessing, Transform
from workbench.v1 import common_pb2

REPO = Path(__file__).resolve().parents[2]
PHOTOS = sorted((REPO / "data" / "images").glob("*.jpg"))
NONE = Transform(1.0, 1.0, 0.0, 0.0)


def test_both_layouts_decode_centre_boxes_to_corners_with_class_aware_nms():
    # three predictions of two classes: the second overlaps the first (same class: suppressed), the third is of
    # the other class at the same place (kept), a fourth is under the threshold
    rows = np.float32([
        [50, 50, 20, 10, 0.9, 0.0],
        [51, 50, 20, 10, 0.8, 0.0],
        [50, 50, 20, 10, 0.0, 0.7],
        [10, 10, 4, 4, 0.1, 0.05],
    ])
    settings = DecodeSettings(confidence_threshold=0.25, iou_threshold=0.7, multi_label=False)
    v8 = AnchorFreeDecoder("out", 2, settings)({"out": rows.T[None]}, NONE)
    assert v8.boxes.tolist() == [[40, 45, 60, 55], [40, 45, 60, 55]]
    assert v8.labels.tolist() == [0, 1] and np.allclose(v8.scores, [0.9, 0.7])
    # YOLOv5: objectness then probabilities, score = objectness * probability
    v5_rows = np.concatenate([rows[:, :4], np.float32([[0.5], [0.5], [1.0], [1.0]]), rows[:, 4:]], axis=1)
    v5 = AnchorFreeDecoder("out", 2, settings, objectness=True)({"out": v5_rows[None]}, NONE)
    assert v5.labels.tolist() == [1, 0] and np.allclose(v5.scores, [0.7, 0.45])


def test_non_finite_predictions_are_dropped_and_counted():
    rows = np.float32([[50, 50, 20, 10, 0.9], [np.nan, 50, 20, 10, 0.9], [50, 50, np.inf, 10, 0.9],
                       [60, 60, 20, 10, np.inf]])
    decoder = AnchorFreeDecoder("out", 1, DecodeSettings())
    found = decoder({"out": rows.T[None]}, NONE)
    assert found.boxes.tolist() == [[40, 45, 60, 55]] and decoder.nonfinite_dropped == 3


def toy(shape: list[int], model_type: str = "") -> ov.Model:
    image = ov.opset13.parameter([1, 3, 32, 32], np.float32, name="image")
    out = ov.opset13.add(ov.opset13.reduce_mean(image, np.int64([1, 2, 3]), False),
                         ov.opset13.constant(np.zeros(shape, np.float32)))
    out.output(0).get_tensor().set_names({"out"})
    model = ov.Model([ov.opset13.result(out)], [image])
    if model_type:
        write_model_info(model, {"model_type": model_type})
    return model


def test_the_layout_comes_from_model_type_or_else_from_the_shape():
    v8 = Decoder.from_model(toy([1, 84, 8400]))
    assert isinstance(v8, AnchorFreeDecoder) and v8.classes == 80 and not v8.objectness
    v5 = Decoder.from_model(toy([1, 25200, 85]))
    assert isinstance(v5, AnchorFreeDecoder) and v5.classes == 80 and v5.objectness
    # a transposed YOLOv8 export reads as YOLOv5 by its shape; model_type says what it is
    assert Decoder.from_model(toy([1, 8400, 84], "YOLOv5")).objectness
    # [1, N, 6] stays the boxes-after-NMS format unless model_type says otherwise
    assert isinstance(Decoder.from_model(toy([1, 300, 6])), BoxesDecoder)
    one_class_v5 = Decoder.from_model(toy([1, 300, 6], "YOLOv5"))
    assert isinstance(one_class_v5, AnchorFreeDecoder) and one_class_v5.classes == 1
    with pytest.raises(FailedPrecondition, match=r"\[1,4,8400\].*model_type"):
        Decoder.from_model(toy([1, 4, 8400]))


@pytest.fixture(scope="module")
def yolov8n(tmp_path_factory) -> ov.Model:
    model, framework = load("", ModelFiles(model=reference_models.yolov8n()), tmp_path_factory.mktemp("yolov8n"))
    assert framework == "ONNX"
    return model


def test_an_ultralytics_export_describes_itself(yolov8n):
    info = model_info_strings(yolov8n)
    assert info["model_type"] == "YOLOv8" and info["architecture"] == "ultralytics-8.2.46"
    assert info["label_names"].startswith('["FEMALE_GENITALIA_COVERED", "FACE_FEMALE"') and len(info["labels"].split()) == 18
    assert (info["resize_type"], info["pad_value"], info["scale_values"]) == ("fit_to_window_letterbox", "114",
                                                                              "255 255 255")
    assert list(yolov8n.input(0).get_shape()) == [1, 3, 320, 320]  # the export's size, from [?,3,?,?]
    assert isinstance(Decoder.from_model(yolov8n), AnchorFreeDecoder)


def reference(raw: np.ndarray, threshold: float, iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ultralytics' decode written out: [4+C, A] -> best class per prediction, class-aware NMS (OpenCV's)."""
    rows = raw[0].T
    labels, scores = rows[:, 4:].argmax(1), rows[:, 4:].max(1)
    keep = scores > threshold
    rows, labels, scores = rows[keep], labels[keep], scores[keep]
    xywh = np.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2, rows[:, 2], rows[:, 3]], 1)
    kept = np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), labels.tolist(), threshold, iou),
                      int).reshape(-1)
    boxes = np.concatenate([xywh[kept, :2], xywh[kept, :2] + xywh[kept, 2:]], 1)
    return boxes, scores[kept], labels[kept]


@pytest.mark.parametrize("photo", [p.name for p in PHOTOS])
def test_yolov8n_detections_equal_opencv_dnn_with_ultralytics_decoding(yolov8n, photo):
    image = cv2.imread(str(REPO / "data" / "images" / photo))
    tensor, transform = Preprocessing.from_model(yolov8n)(image)
    net = cv2.dnn.readNetFromONNX(str(reference_models.yolov8n()))
    net.setInput(tensor[None])
    expected = reference(net.forward(), 0.001, 0.7)
    compiled = ov.Core().compile_model(yolov8n, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    decoder = Decoder.from_model(yolov8n, confidence_threshold=0.001, multi_label=False)
    found = decoder({"output0": compiled(tensor[None])[0]}, transform)
    assert len(expected[0]) > 0
    order = np.argsort(-expected[1], kind="stable")[:decoder.settings.max_detections]
    boxes = expected[0][order]
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - transform.pad_x) / transform.scale_x  # back to the photo's pixels
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - transform.pad_y) / transform.scale_y
    assert len(found) == len(order)
    assert found.labels.tolist() == expected[2][order].tolist()
    assert np.allclose(found.scores, expected[1][order], atol=1e-4)
    assert np.allclose(found.boxes, boxes, atol=0.05)  # 0.05 photo pixels: IoU above 0.99 for every box


def test_a_yolov8_export_goes_through_import_int8_and_the_comparison_report(workbench):
    """The real YOLOv8n through the services: imported with no options, calibrated, and its INT8 child compared
    with the parent on the photographs."""
    client = workbench.client
    model = client.wait_job(client.import_model(
        "yolov8n", {common_pb2.MODEL_FILE_ROLE_MODEL: reference_models.yolov8n()}).id).output.model_id
    assert client.get_model(model).artifact.model_info["model_type"] == "YOLOv8"
    dataset = client.wait_job(client.import_dataset("photos", PHOTOS).id).output.dataset_id
    parent = client.create_project("yolov8n on photos", model_id=model, dataset_id=dataset)
    child = client.wait_job(client.optimize_project(parent.id, ONE_CALIBRATION).id).output.project_id
    result = client.get_project(child).optimization.result
    assert result.metric_name == "parent_agreement" and result.model.analysis.quantized
    report = client.get_report(client.wait_job(client.evaluate_project(child).id).output.report_id)
    summary = report.result.comparison
    assert report.parent_id == parent.id and summary.images == len(PHOTOS)
    assert summary.total_b > 0 and summary.matches <= min(summary.total_a, summary.total_b)


def test_the_converter_reads_the_metadata_as_onnx_does_without_the_onnx_package(tmp_path):
    path = reference_models.yolov8n()
    assert ultralytics.metadata(path) == {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    assert ultralytics.metadata(tmp_path / "junk.onnx") == {}
