"""Benchmarks and sweeps of a project's model, and the side-by-side comparison of two projects."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from workbench_runtime.errors import FailedPrecondition, InvalidArgument
from services.common.object_store import ObjectStore
from services.common.provenance import differences
from services.common.telemetry import metrics
from services.gateway.jobs import JobContext, JobManager
from services.gateway.projects import Catalog
from services.gateway.workers import Workers, follow
from workbench.v1 import benchmark_pb2, common_pb2, gateway_pb2

MAX_DURATION_S = 600.0
BENCHMARK, SWEEP = common_pb2.JOB_KIND_BENCHMARK, common_pb2.JOB_KIND_SWEEP
DOWNLOAD_EXPIRY = timedelta(hours=1)


class Measurements:
    def __init__(self, catalog: Catalog, jobs: JobManager, workers: Workers, store: ObjectStore, bucket: str):
        self.catalog, self.jobs, self.workers, self.store, self.bucket = catalog, jobs, workers, store, bucket
        jobs.register(BENCHMARK, gateway_pb2.BenchmarkProjectRequest, self._benchmark)
        jobs.register(SWEEP, gateway_pb2.SweepProjectRequest, self._sweep)

    def _inputs(self, project_id: str) -> tuple[gateway_pb2.Project, common_pb2.ModelArtifact, common_pb2.DatasetArtifact]:
        project = self.catalog.projects.get(project_id, "project_id")
        if not project.model_id:
            raise FailedPrecondition(f"project {project_id} has no model", field="project_id")
        model = self.catalog.models.get(project.model_id, "project.model_id")
        dataset = self.catalog.datasets.get(project.dataset_id, "project.dataset_id").artifact \
            if project.dataset_id else common_pb2.DatasetArtifact()
        return project, model.artifact, dataset

    @staticmethod
    def _check(config: common_pb2.BenchmarkConfig, field: str) -> None:
        if config.duration_seconds < 0 or config.duration_seconds > MAX_DURATION_S:
            raise InvalidArgument(f"duration_seconds must be within 0..{MAX_DURATION_S:.0f}",
                                  field=f"{field}.duration_seconds")
        if config.iterations < 0:
            raise InvalidArgument("iterations must not be negative", field=f"{field}.iterations")

    def benchmark(self, request: gateway_pb2.BenchmarkProjectRequest) -> common_pb2.Job:
        self._check(request.config, "config")
        return self.jobs.for_request(BENCHMARK, request.request_id) or self._submit(BENCHMARK, request)

    def sweep(self, request: gateway_pb2.SweepProjectRequest) -> common_pb2.Job:
        self._check(request.base, "base")
        if request.latency_limit_ms < 0:
            raise InvalidArgument("latency_limit_ms must not be negative", field="latency_limit_ms")
        return self.jobs.for_request(SWEEP, request.request_id) or self._submit(SWEEP, request)

    def _submit(self, kind: int, request) -> common_pb2.Job:
        self._inputs(request.project_id)
        return self.jobs.submit(kind, request, project_id=request.project_id, request_id=request.request_id)

    def _benchmark(self, ctx: JobContext, request: gateway_pb2.BenchmarkProjectRequest) -> common_pb2.JobOutput:
        project, model, dataset = self._inputs(request.project_id)
        config = common_pb2.BenchmarkConfig()
        config.CopyFrom(request.config)
        config.device = config.device or project.device
        call = benchmark_pb2.BenchmarkRequest(model=model, dataset=dataset, config=config)
        result = follow(ctx, "benchmark", self.workers.benchmark.Benchmark, call)
        result.provenance.job_id = ctx.job.id
        ctx.on_success(lambda tx: self.catalog.projects.update(
            project.id, "project_id", lambda latest: latest.last_benchmark.CopyFrom(result), tx))
        ctx.on_success(lambda tx: metrics.benchmark_fps(project.id, result.throughput_fps))
        return common_pb2.JobOutput(project_id=project.id, benchmark=result)

    def _sweep(self, ctx: JobContext, request: gateway_pb2.SweepProjectRequest) -> common_pb2.JobOutput:
        project, model, dataset = self._inputs(request.project_id)
        base = common_pb2.BenchmarkConfig()
        base.CopyFrom(request.base)
        base.device = base.device or project.device
        call = benchmark_pb2.SweepRequest(
            model=model, dataset=dataset, base=base, batches=request.batches, streams=request.streams,
            infer_requests=request.infer_requests, latency_limit_ms=request.latency_limit_ms,
            output_bucket=self.bucket,
        )
        result = follow(ctx, "benchmark", self.workers.benchmark.Sweep, call)
        result.provenance.job_id = ctx.job.id
        ctx.on_success(lambda tx: self.catalog.projects.update(
            project.id, "project_id", lambda latest: latest.last_sweep.CopyFrom(result), tx))
        return common_pb2.JobOutput(project_id=project.id, sweep=result)

    def sweep_chart(self, project_id: str) -> gateway_pb2.GetSweepChartResponse:
        project = self.catalog.projects.get(project_id, "project_id")
        if not project.last_sweep.chart.key:
            raise FailedPrecondition(f"project {project_id} has not been swept yet", field="project_id")
        chart = project.last_sweep.chart
        return gateway_pb2.GetSweepChartResponse(
            png=chart, download_url=self.store.presigned_get(chart.bucket, chart.key, DOWNLOAD_EXPIRY))

    def compare(self, first_id: str, second_id: str) -> gateway_pb2.CompareProjectsResponse:
        first = self.catalog.projects.get(first_id, "first_project_id")
        second = self.catalog.projects.get(second_id, "second_project_id")
        for field, project in (("first_project_id", first), ("second_project_id", second)):
            if not project.HasField("last_benchmark"):
                raise FailedPrecondition(f"project {project.id} has not been benchmarked yet", field=field)
        a, b = first.last_benchmark, second.last_benchmark
        # the models differ on purpose; anything else that differs makes the ratios say less
        unlike = differences(a.provenance, b.provenance, ignore_inputs=("model.",))
        unlike += [f"{p.id}'s benchmark was disturbed: {r.conditions.disturbed_reason or 'other work ran'}"
                   for p, r in ((first, a), (second, b)) if r.conditions.disturbed]
        response = gateway_pb2.CompareProjectsResponse(
            first=first, second=second,
            throughput_ratio=b.throughput_fps / a.throughput_fps if a.throughput_fps else 0.0,
            latency_ratio=b.latency.median_ms / a.latency.median_ms if a.latency.median_ms else 0.0,
            comparable=not unlike, differences=unlike,
        )
        by_type: dict[str, dict] = defaultdict(lambda: {"t": [0.0, 0.0], "p": [set(), set()]})
        for side, result in enumerate((a, b)):
            for layer in result.layer_counters:
                entry = by_type[layer.layer_type]
                entry["t"][side] += layer.real_time_ms
                entry["p"][side].add(layer.exec_precision)
        for layer_type, entry in sorted(by_type.items(), key=lambda kv: -max(kv[1]["t"])):
            response.layer_types.add(
                layer_type=layer_type, first_time_ms=entry["t"][0], second_time_ms=entry["t"][1],
                first_precisions=sorted(entry["p"][0]), second_precisions=sorted(entry["p"][1]),
            )
        return response
