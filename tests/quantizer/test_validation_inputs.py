"""The quantizer's validation inputs through the tensor cache: the same numbers as decoding every time."""

from __future__ import annotations

from pathlib import Path

import openvino as ov
import pytest

from services import reference_models
from services.common.dataset_files import read_bgr
from services.common.tensor_cache import TensorCache
from services.converter.darknet import convert_darknet
from services.quantizer.pipeline import READ_BGR
from services.quantizer.validation import model_input, split, validation_for
from workbench_runtime.preprocess import Preprocessing

REPO = Path(__file__).resolve().parents[2]
IMAGES = sorted((REPO / "data" / "images").glob("*.jpg")) + sorted((REPO / "data" / "vtest").glob("*.jpg"))[:6]


@pytest.fixture(scope="module")
def tiny() -> ov.Model:
    files = reference_models.yolov4_tiny()
    return convert_darknet(files.cfg, files.weights, names=files.names)


def cached(cache, path, preprocess):
    return cache.load(path.read_bytes(), preprocess, name=path.name, decode=lambda: read_bgr(path), decoder=READ_BGR)


def test_cached_inputs_equal_the_decoded_ones_and_validate_alike(tiny, tmp_path):
    preprocess = Preprocessing.from_model(tiny)
    cache = TensorCache(tmp_path)
    ids = list(range(1, len(IMAGES) + 1))
    pictures = [read_bgr(p) for p in IMAGES]
    fresh = [model_input(p, preprocess) for p in pictures]
    first = [cached(cache, p, preprocess) for p in IMAGES]
    again = [cached(cache, p, preprocess) for p in IMAGES]
    assert (cache.misses, cache.hits) == (len(IMAGES), len(IMAGES))
    for a, b, c in zip(fresh, first, again):
        assert a[0].tobytes() == b[0].tobytes() == c[0].tobytes() and a[1:] == b[1:] == c[1:]
    # the quantizer's decode is its own key: never served the accuracy service's decode_image tensors
    data = IMAGES[0].read_bytes()
    assert cache.key(data, preprocess, READ_BGR) != cache.key(data, preprocess)

    _, judged_pictures = split(pictures, ids)
    _, judged_inputs = split(again, ids)
    report = lambda *a, **k: None  # noqa: E731
    by_picture = validation_for(tiny, judged_pictures, preprocess, None, report)
    by_input = validation_for(tiny, judged_inputs, preprocess, None, report)
    compiled = ov.Core().compile_model(tiny, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert by_picture.metric(compiled) == by_input.metric(compiled) == pytest.approx(1.0)
    # the parent's metric comes from the predictions the validation made: the same as judging it again
    assert by_input.parent == by_input.judge(tiny, reference=True) == by_picture.parent
