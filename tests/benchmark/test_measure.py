"""The benchmark domain on a small real model: figures, configurations, refusals, the sweep and its chart."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest

from services.benchmark.sweep import chart_png, sweep, sweet_spot
from workbench_runtime.errors import FailedPrecondition, InvalidArgument
from services.common.measure import BenchConfig, BenchResult, benchmark

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_reports_throughput_latency_and_conditions(model_xml):
    events = []
    result = benchmark(ov.Core().read_model(model_xml), BenchConfig(duration_s=0.5, performance_counters=True),
                       report=lambda *a, **k: events.append(a[0]))
    assert result.throughput_fps > 0 and result.iterations >= result.runtime_infer_requests
    assert result.iterations % result.runtime_infer_requests == 0  # whole waves, as benchmark_app
    lat = result.latency_ms
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert result.throughput_fps == pytest.approx(result.iterations / result.duration_s)
    assert result.runtime_streams >= 1 and result.runtime_threads >= 1 and result.inference_precision
    assert result.conditions["openvino_version"] == ov.get_version() and result.conditions["cpu_cores"] >= 1
    assert "disturbed" in result.conditions
    assert {layer.layer_type for layer in result.layers} >= {"Convolution"}
    assert events[0] == "compile" and "profile" in events


def test_inference_precision_is_asked_for_and_reported(model_xml):
    result = benchmark(ov.Core().read_model(model_xml), BenchConfig(iterations=4, inference_precision="f32"))
    assert result.inference_precision == "f32"


def test_batch_counts_images_not_batches(model_xml):
    result = benchmark(ov.Core().read_model(model_xml), BenchConfig(batch=4, iterations=8, hint="latency"))
    assert result.throughput_fps == pytest.approx(4 * result.iterations / result.duration_s)


def frames(count: int, size: int = 32) -> np.ndarray:
    """Real photographs (vtest frames), resized for the small classifier: NCHW float32 in [0, 1]."""
    paths = sorted((REPO / "data" / "vtest").glob("*.jpg"))[:count]
    assert len(paths) == count
    return np.stack([cv2.resize(cv2.imread(str(p)), (size, size)).transpose(2, 0, 1) for p in paths]).astype(
        np.float32) / 255


def digests(images: np.ndarray) -> set[str]:
    return {hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images}


@pytest.mark.parametrize("batch", [1, 2])
def test_dataset_images_reach_the_model(model_xml, batch):
    """The requests carry the dataset's own images, every one of them, tiled to the batch; and random inputs
    carry none of them. The result names what the model read (one digest per distinct sample)."""
    images = frames(3)
    config = BenchConfig(iterations=8, infer_requests=4, batch=batch, hint="latency")
    fed = benchmark(ov.Core().read_model(model_xml), config, images)
    assert fed.runtime_infer_requests == 4 and len(fed.samples) == len(set(fed.samples))
    assert set(fed.samples) == digests(images)  # 4 requests x batch >= 3 images: each one is fed

    random = benchmark(ov.Core().read_model(model_xml), config)
    assert len(random.samples) == batch and not set(random.samples) & digests(images)


@pytest.mark.parametrize(
    ("config", "error", "field"),
    [
        (BenchConfig(device="NPU9"), InvalidArgument, "config.device"),
        (BenchConfig(duration_s=0, iterations=0), InvalidArgument, "config.duration_seconds"),
        (BenchConfig(streams=-1), InvalidArgument, "config.streams"),
        (BenchConfig(hint="fastest"), InvalidArgument, "config.hint"),
        (BenchConfig(inference_precision="int4"), InvalidArgument, "config.inference_precision"),
    ],
)
def test_bad_configurations_are_refused(model_xml, config, error, field):
    with pytest.raises(error) as err:
        benchmark(ov.Core().read_model(model_xml), config)
    assert err.value.field == field


def test_dynamic_model_needs_a_batch(tmp_path, model_xml):
    model = ov.Core().read_model(model_xml)
    model.reshape({"image": ov.PartialShape("[?,3,32,32]")})
    with pytest.raises(FailedPrecondition, match="dynamic shape"):
        benchmark(model, BenchConfig(iterations=2))
    assert benchmark(model, BenchConfig(iterations=2, batch=2)).throughput_fps > 0


def test_sweep_finds_the_best_point_and_the_sweet_spot(model_xml):
    found = sweep(model_xml, BenchConfig(duration_s=0.3), [1, 2], [1, 2], [], latency_limit_ms=1e6)
    assert len(found.points) == 4
    fps = [p.result.throughput_fps for p in found.points]
    assert found.best == int(np.argmax(fps)) and found.best_within_latency == found.best
    assert found.sweet_spot == sweet_spot([p.result for p in found.points])
    none_fit = sweep(model_xml, BenchConfig(duration_s=0.2), [1], [1], [], latency_limit_ms=1e-6)
    assert none_fit.best_within_latency == -1
    chart = cv2.imdecode(np.frombuffer(chart_png(found, 1e6, "t"), np.uint8), cv2.IMREAD_COLOR)
    assert chart.shape == (560, 900, 3) and (chart < 250).any()
    with pytest.raises(InvalidArgument, match="at most"):
        sweep(model_xml, BenchConfig(), list(range(1, 10)), list(range(1, 10)), [], 0)


def test_the_sweet_spot_is_the_lowest_latency_within_a_few_percent_of_the_best_throughput():
    """The issue's own grid: 1x1x1 gave 218.9 FPS at 4.4 ms, the best 222.7 FPS at 17.5 ms."""
    def result(fps: float, median_ms: float) -> BenchResult:
        return BenchResult(BenchConfig(), fps, {"median": median_ms}, 0.0, 0.0, 1, 1.0, 1, 1, 1, "f32", {})

    grid = [result(218.9, 4.4), result(222.7, 17.5), result(150.0, 2.0), result(221.0, 9.0)]
    assert sweet_spot(grid) == 0  # 150 FPS at 2 ms is faster to answer but far from the best throughput
    assert sweet_spot([result(100.0, 5.0)]) == 0
    assert sweet_spot([result(100.0, 5.0), result(300.0, 20.0)]) == 1  # nothing else comes near the best
