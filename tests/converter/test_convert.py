"""Conversion domain: ONNX (built here with the onnx package), IR round trip, options, analysis, refusals."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import openvino as ov
import pytest
from onnx.reference import ReferenceEvaluator

from services.common.analysis import analyze
from workbench_runtime.errors import InvalidArgument
from services.converter.convert import (
    ConvertOptions, ModelFiles, apply_options, detect_framework, load, refuse_code_formats, save,
)
from tests.small_models import small_classifier

RNG = np.random.default_rng(7)


def infer(model: ov.Model, x: np.ndarray) -> np.ndarray:
    # The CPU plugin defaults to bf16 where the CPU has it; compare in f32.
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]


def test_onnx_converts_and_matches_the_onnx_reference(tmp_path):
    reference = small_classifier(tmp_path / "model.onnx")
    model, framework = load("", ModelFiles(model=tmp_path / "model.onnx"), tmp_path)
    assert framework == "ONNX"
    x = RNG.random((1, 3, 32, 32), dtype=np.float32)
    expected = ReferenceEvaluator(reference).run(None, {"image": x})[0]
    np.testing.assert_allclose(infer(model, x), expected, atol=1e-5)


def test_ir_round_trip_keeps_outputs_identical(tmp_path):
    small_classifier(tmp_path / "model.onnx")
    model, _ = load("ONNX", ModelFiles(model=tmp_path / "model.onnx"), tmp_path)
    xml, bin_path = save(model, tmp_path / "ir" / "model.xml", compress_to_fp16=False)
    again, framework = load("", ModelFiles(ir_xml=xml, ir_bin=bin_path), tmp_path)
    assert framework == "OPENVINO"
    x = RNG.random((1, 3, 32, 32), dtype=np.float32)
    assert np.array_equal(infer(model, x), infer(again, x))


def test_analysis_counts_parameters_flops_and_task(tmp_path):
    small_classifier(tmp_path / "model.onnx")
    model, _ = load("ONNX", ModelFiles(model=tmp_path / "model.onnx"), tmp_path)
    analysis = analyze(model)
    assert analysis.parameter_count == 8 * 27 + 8 + 10 * 8 + 10
    conv_flops = 2 * 8 * 32 * 32 * 27
    assert analysis.gflops == pytest.approx((conv_flops + 2 * 10 * 8) / 1e9, rel=1e-6)
    assert analysis.task == "classification" and not analysis.quantized
    assert analysis.inputs[0].name == "image" and analysis.inputs[0].shape == "[1,3,32,32]"
    assert analysis.weight_bytes == {"f32": 4 * analysis.parameter_count}


def test_options_shape_preprocessing_outputs_and_fp16(tmp_path):
    small_classifier(tmp_path / "model.onnx")
    model, _ = load("ONNX", ModelFiles(model=tmp_path / "model.onnx"), tmp_path)
    plain = infer(model, np.full((1, 3, 32, 32), 0.5, np.float32))
    options = ConvertOptions(mean_values=[100.0, 100.0, 100.0], scale_values=[200.0, 200.0, 200.0],
                             compress_to_fp16=True, outputs=["logits"])
    converted = apply_options(model, options)
    # mean/scale are built in: raw 200 becomes (200 - 100) / 200 = 0.5
    np.testing.assert_allclose(infer(converted, np.full((1, 3, 32, 32), 200.0, np.float32)), plain, atol=1e-5)
    xml, _ = save(converted, tmp_path / "fp16" / "model.xml", compress_to_fp16=True)
    assert analyze(ov.Core().read_model(str(xml))).weight_bytes.keys() == {"f16"}
    dynamic = apply_options(model, ConvertOptions(input_shapes={"image": "[?,3,32,32]"}))
    assert dynamic.input(0).get_partial_shape().to_string() == "[?,3,32,32]"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ConvertOptions(input_shapes={"nope": "[1,3,32,32]"}), "no input 'nope'"),
        (ConvertOptions(outputs=["missing"]), "no tensor named missing"),
        (ConvertOptions(input_shapes={"image": "[1,3,32]"}), "cannot take that input shape"),
    ],
)
def test_bad_options_name_the_problem(tmp_path, options, message):
    small_classifier(tmp_path / "model.onnx")
    model, _ = load("ONNX", ModelFiles(model=tmp_path / "model.onnx"), tmp_path)
    with pytest.raises(InvalidArgument, match=message):
        apply_options(model, options)


def test_garbage_truncated_and_mismatched_files_are_refused(tmp_path):
    small_classifier(tmp_path / "model.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(RNG.bytes(4096))
    with pytest.raises(InvalidArgument, match="not a model of any supported framework|could not be converted"):
        load("", ModelFiles(model=garbage), tmp_path)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes((tmp_path / "model.onnx").read_bytes()[:300])
    with pytest.raises(InvalidArgument):
        load("ONNX", ModelFiles(model=truncated), tmp_path)
    with pytest.raises(InvalidArgument, match="not TFLITE as declared"):
        load("TFLITE", ModelFiles(model=tmp_path / "model.onnx"), tmp_path)
    assert detect_framework(tmp_path / "model.onnx") == "ONNX"
    bad_xml = tmp_path / "bad.xml"
    bad_xml.write_text("<net><layers><layer id='0' type='Nope'/></layers></net>")
    (tmp_path / "bad.bin").write_bytes(b"")
    with pytest.raises(InvalidArgument, match="not a valid OpenVINO IR"):
        load("OPENVINO", ModelFiles(ir_xml=bad_xml, ir_bin=tmp_path / "bad.bin"), tmp_path)


def test_formats_that_run_code_are_refused(tmp_path):
    pickled = tmp_path / "model.bin"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(InvalidArgument, match="pickle"):
        refuse_code_formats("model.bin", pickled)
    checkpoint = tmp_path / "model.zip"
    with zipfile.ZipFile(checkpoint, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(1))
    with pytest.raises(InvalidArgument, match="PyTorch"):
        refuse_code_formats("weights.zip", checkpoint)
    for name in ("model.pt", "model.pth", "model.h5", "model.keras"):
        (tmp_path / name).write_bytes(b"\x00" * 10)
        with pytest.raises(InvalidArgument, match="runs code"):
            refuse_code_formats(name, tmp_path / name)


def test_archive_with_traversal_is_refused(tmp_path):
    evil = tmp_path / "saved_model.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.pb", b"x")
    with pytest.raises(InvalidArgument, match="outside the archive"):
        load("TENSORFLOW", ModelFiles(archive=evil), tmp_path)
    assert not (tmp_path.parent / "escape.pb").exists()
