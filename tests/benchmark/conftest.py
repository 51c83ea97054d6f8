"""Fixtures the benchmark tests share."""

import openvino as ov
import pytest

from services.converter.convert import ModelFiles, load
from tests.small_models import small_classifier


@pytest.fixture
def model_xml(tmp_path):
    """A small classifier as an OpenVINO IR file, in f32."""
    small_classifier(tmp_path / "m.onnx")
    model, _ = load("ONNX", ModelFiles(model=tmp_path / "m.onnx"), tmp_path)
    xml = tmp_path / "m.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return str(xml)
