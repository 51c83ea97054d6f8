"""BenchmarkService: one measurement at a time per instance, inputs from the project's dataset."""

from __future__ import annotations

import os
import tempfile
import threading
from collections import deque
from pathlib import Path

import numpy as np
import openvino as ov

from services.benchmark.sweep import Sweep, SweepPoint, chart_png, sweep
from services.common.artifacts import download_ir
from services.common.dataset_files import StoredDataset, download_images, read_bgr
from services.common.measure import BenchConfig, BenchResult, benchmark
from services.common.object_store import ObjectStore
from services.common.pb import ir_from_pb, ref_to_pb
from workbench_runtime.preprocess import Preprocessing
from services.common.progress import Report, run_reporting
from services.common.provenance import dataset_inputs, model_inputs, provenance
from services.common.settings import Settings
from workbench.v1 import benchmark_pb2, benchmark_pb2_grpc, common_pb2

SERVICE_NAME = benchmark_pb2.DESCRIPTOR.services_by_name["BenchmarkService"].full_name
MEASURER = "the benchmark service"  # how others waiting for this machine's measuring turn hear of us
INPUT_IMAGES = 16  # distinct dataset images fed to the requests, as benchmark_app feeds its -i folder
HINT_NAMES = {common_pb2.PERFORMANCE_HINT_UNSPECIFIED: "throughput", common_pb2.PERFORMANCE_HINT_THROUGHPUT: "throughput",
              common_pb2.PERFORMANCE_HINT_LATENCY: "latency", common_pb2.PERFORMANCE_HINT_NONE: "none"}


class TurnQueue:
    """First come, first measured: two measurements at once would each distort the other.

    This orders this instance's own calls; the machine's measuring turn (services.common.measure.measuring_turn),
    which every measurement then takes, keeps them apart from other processes' (the quantizer's candidates)."""

    def __init__(self) -> None:
        self._waiting: deque[object] = deque()
        self._changed = threading.Condition()

    def wait_turn(self, report: Report) -> object:
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            while self._waiting[0] is not ticket:
                ahead = self._waiting.index(ticket)
                report("queued", 0.0, f"waiting: {ahead} measurement{'s' if ahead > 1 else ''} ahead")
                self._changed.wait(timeout=1.0)
        return ticket

    def done(self, ticket: object) -> None:
        with self._changed:
            self._waiting.remove(ticket)
            self._changed.notify_all()


def config_from_pb(config: common_pb2.BenchmarkConfig, cache_dir: str) -> BenchConfig:
    return BenchConfig(
        device=config.device or "CPU", hint=HINT_NAMES[config.hint], streams=config.streams,
        infer_requests=config.infer_requests, batch=config.batch, threads=config.threads,
        duration_s=config.duration_seconds if config.duration_seconds or config.iterations else 10.0,
        iterations=config.iterations, cache_dir=cache_dir if config.cache_compiled_model else "",
        performance_counters=config.performance_counters, inference_precision=config.inference_precision,
    )


def result_to_pb(result: BenchResult, request_config: common_pb2.BenchmarkConfig) -> common_pb2.BenchmarkResult:
    # what the message has fields for (the loop also records how long it waited for its turn)
    conditions = {k: v for k, v in result.conditions.items()
                  if k in common_pb2.MeasurementConditions.DESCRIPTOR.fields_by_name}
    return common_pb2.BenchmarkResult(
        config=request_config, throughput_fps=result.throughput_fps,
        latency=common_pb2.LatencyStats(**{f"{k}_ms": v for k, v in result.latency_ms.items()}),
        compile_seconds=result.compile_s, first_inference_ms=result.first_inference_ms,
        iterations=result.iterations, duration_seconds=result.duration_s,
        runtime_streams=result.runtime_streams, runtime_infer_requests=result.runtime_infer_requests,
        runtime_threads=result.runtime_threads, inference_precision=result.inference_precision,
        conditions=common_pb2.MeasurementConditions(**conditions),
        layer_counters=[common_pb2.LayerCounter(name=l.name, layer_type=l.layer_type, exec_precision=l.exec_precision,
                                                real_time_ms=l.real_time_ms, exec_type=l.exec_type)
                        for l in result.layers],
    )


class BenchmarkServicer(benchmark_pb2_grpc.BenchmarkServiceServicer):
    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store
        self.turns = TurnQueue()
        self.cache_dir = os.path.join(tempfile.gettempdir(), "workbench-model-cache")

    def Benchmark(self, request: benchmark_pb2.BenchmarkRequest, context):
        config = config_from_pb(request.config, self.cache_dir)

        def work(report: Report) -> common_pb2.BenchmarkResult:
            with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
                model, images = self._inputs(request.model, request.dataset, request.config.random_inputs, Path(tmp))
                ticket = self.turns.wait_turn(report)
                try:
                    made = provenance("benchmark", self._used(request.model, request.dataset, images), request.config)
                    result = benchmark(model, config, images, report, who=MEASURER)
                finally:
                    self.turns.done(ticket)
            measured = result_to_pb(result, request.config)
            measured.provenance.CopyFrom(made)
            return measured

        result = yield from run_reporting(work, lambda p: benchmark_pb2.BenchmarkResponse(progress=p))
        yield benchmark_pb2.BenchmarkResponse(result=result)

    def Sweep(self, request: benchmark_pb2.SweepRequest, context):
        base = config_from_pb(request.base, self.cache_dir)
        bucket = request.output_bucket or self.settings.bucket
        points: list[SweepPoint] = []
        made: list[common_pb2.Provenance] = []

        def work(report: Report) -> Sweep:
            with tempfile.TemporaryDirectory(prefix="sweep-") as tmp:
                model, images = self._inputs(request.model, request.dataset, request.base.random_inputs, Path(tmp))
                xml = Path(tmp) / "model.xml"
                ov.save_model(model, str(xml), compress_to_fp16=False)
                ticket = self.turns.wait_turn(report)
                try:
                    grid = benchmark_pb2.SweepRequest(base=request.base, batches=request.batches, streams=request.streams,
                                                      infer_requests=request.infer_requests,
                                                      latency_limit_ms=request.latency_limit_ms)
                    made.append(provenance("benchmark", self._used(request.model, request.dataset, images), grid))
                    return sweep(str(xml), base, list(request.batches), list(request.streams),
                                 list(request.infer_requests), request.latency_limit_ms, images, report, points.append,
                                 who=MEASURER)
                finally:
                    self.turns.done(ticket)

        found = yield from run_reporting(work, lambda p: benchmark_pb2.SweepResponse(progress=p))
        result = common_pb2.SweepResult(best_index=found.best, best_within_latency_index=found.best_within_latency,
                                        sweet_spot_index=found.sweet_spot, provenance=made[0])
        for point in found.points:
            config = common_pb2.BenchmarkConfig()
            config.CopyFrom(request.base)
            config.batch, config.streams, config.infer_requests = point.batch, point.streams, point.infer_requests
            result.points.add(batch=point.batch, streams=point.streams, infer_requests=point.infer_requests,
                              result=result_to_pb(point.result, config))
        png = chart_png(found, request.latency_limit_ms, "throughput vs latency")
        chart = self.store.put_bytes(bucket, f"sweeps/{os.urandom(8).hex()}/chart.png", png)
        result.chart.CopyFrom(ref_to_pb(chart))
        yield benchmark_pb2.SweepResponse(result=result)

    @staticmethod
    def _used(model_pb, dataset_pb, images) -> dict[str, common_pb2.ObjectRef]:
        """The objects a measurement read: the model, and the dataset unless it ran on random inputs."""
        return {**model_inputs(model_pb), **(dataset_inputs(dataset_pb) if images is not None else {})}

    def _inputs(self, model_pb, dataset_pb, random_inputs: bool, work: Path) -> tuple[ov.Model, np.ndarray | None]:
        xml = download_ir(self.store, ir_from_pb(model_pb), work / "model")
        model = ov.Core().read_model(str(xml))
        if random_inputs or not dataset_pb.prefix:
            return model, None
        dataset = StoredDataset(dataset_pb.bucket, dataset_pb.prefix)
        entries = dataset.manifest(self.store)["images"][:INPUT_IMAGES]
        preprocess = Preprocessing.from_model(model)
        images = [read_bgr(path) for _, path in download_images(self.store, dataset, entries, work / "images")]
        return model, preprocess.batch(images) if images else None
