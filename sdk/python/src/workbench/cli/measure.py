"""Figures and what made them: `workbench benchmark`, `sweep` and `compare`, and the table of
`workbench project provenance`."""

from __future__ import annotations

from workbench.cli.output import Output, as_dict, progress_printer, rows
from workbench.client import WorkbenchClient
from workbench.v1 import common_pb2


def add_parser(commands) -> None:
    bench = commands.add_parser("benchmark", help="measure a project's throughput and latency")
    bench.set_defaults(handler=benchmark)
    bench_flags(bench)
    sweep_cmd = commands.add_parser("sweep", help="explore inference configurations")
    sweep_cmd.set_defaults(handler=sweep)
    bench_flags(sweep_cmd)
    sweep_cmd.add_argument("--batches", default="1", help="comma-separated, e.g. 1,2,4")
    sweep_cmd.add_argument("--streams-grid", default="", help="comma-separated stream counts")
    sweep_cmd.add_argument("--requests-grid", default="", help="comma-separated request counts")
    sweep_cmd.add_argument("--latency-limit", type=float, default=0.0, help="ms: also mark the best point under it")
    sweep_cmd.add_argument("-o", "--output", default="sweep.png", help="where to write the chart (PNG)")
    compare_cmd = commands.add_parser("compare", help="two projects side by side")
    compare_cmd.set_defaults(handler=compare)
    compare_cmd.add_argument("first")
    compare_cmd.add_argument("second")


def bench_flags(command) -> None:
    command.add_argument("project")
    command.add_argument("--device", default="")
    command.add_argument("--hint", default="throughput", choices=["throughput", "latency", "none"])
    command.add_argument("--streams", type=int, default=0)
    command.add_argument("--requests", type=int, default=0)
    command.add_argument("--batch", type=int, default=0)
    command.add_argument("--threads", type=int, default=0)
    command.add_argument("--duration", type=float, default=10.0, help="seconds")
    command.add_argument("--random", action="store_true", help="random inputs instead of dataset images")
    command.add_argument("--counters", action="store_true", help="per-layer counters (separate run)")
    command.add_argument("--cache", action="store_true", help="cache the compiled model")
    command.add_argument("--precision", default="", choices=["", "f32", "bf16", "f16"],
                         help="inference precision; left out, the runtime chooses")


def bench_config(args) -> common_pb2.BenchmarkConfig:
    return common_pb2.BenchmarkConfig(
        device=args.device, hint=common_pb2.PerformanceHint.Value(f"PERFORMANCE_HINT_{args.hint.upper()}"),
        streams=args.streams, infer_requests=args.requests, batch=args.batch, threads=args.threads,
        duration_seconds=args.duration, random_inputs=args.random, performance_counters=args.counters,
        cache_compiled_model=args.cache, inference_precision=args.precision,
    )


def bench_line(r: common_pb2.BenchmarkResult) -> str:
    c = r.conditions
    flag = f"  DISTURBED: {c.disturbed_reason}" if c.disturbed else ""
    return (f"{r.throughput_fps:.1f} FPS, latency median {r.latency.median_ms:.2f} ms (p90 {r.latency.p90_ms:.2f}, "
            f"p99 {r.latency.p99_ms:.2f}), {r.runtime_streams} streams, {r.runtime_infer_requests} requests, "
            f"{r.runtime_threads} threads, {r.inference_precision} on {c.device_full_name} ({c.cpu_cores} cores, "
            f"load {c.load_average:.2f}, OpenVINO {c.openvino_version.split('-')[0]}){flag}")


def figure_rows(figures) -> None:
    """One line a figure: its value, the job and service that made it, and the inputs by sha256 prefix."""
    rows(["FIGURE", "VALUE", "JOB", "SERVICE", "INPUTS"],
         [[f.name, f"{f.value:.4g} {f.unit}".strip(), f.provenance.job_id or "-", f.provenance.service or "-",
           " ".join(f"{role}={ref.sha256[:12]}" for role, ref in sorted(f.provenance.inputs.items()))]
          for f in figures])
    if figures:
        print("settings, versions and machine of each: add --json")


def benchmark(args, out: Output, client: WorkbenchClient) -> int:
    job = client.benchmark_project(args.project, bench_config(args))
    result = client.wait_job(job.id, on_event=progress_printer(quiet=args.json)).output.benchmark
    out.result(result, lambda: print(bench_line(result)))
    return 0


def sweep(args, out: Output, client: WorkbenchClient) -> int:
    def numbers(text: str) -> list[int]:
        return [int(v) for v in text.split(",") if v]

    job = client.sweep_project(args.project, batches=numbers(args.batches), streams=numbers(args.streams_grid),
                               infer_requests=numbers(args.requests_grid), latency_limit_ms=args.latency_limit,
                               base=bench_config(args))
    result = client.wait_job(job.id, on_event=progress_printer(quiet=args.json)).output.sweep

    with open(args.output, "wb") as f:
        f.write(client.sweep_chart(args.project))

    def marks(i: int) -> str:
        return ", ".join(name for index, name in ((result.best_index, "best"), (result.sweet_spot_index, "sweet spot"),
                                                  (result.best_within_latency_index, "best under the limit"))
                         if index == i)

    def table() -> None:
        rows(["", "BATCH", "STREAMS", "REQUESTS", "FPS", "MEDIAN MS"],
             [[marks(i), p.batch or "-", p.result.runtime_streams, p.result.runtime_infer_requests,
               f"{p.result.throughput_fps:.1f}", f"{p.result.latency.median_ms:.2f}"]
              for i, p in enumerate(result.points)])
        print(f"sweet spot: the lowest latency within 5% of the best throughput; chart: {args.output}")

    out.result({"sweep": as_dict(result), "chart": args.output}, table)
    return 0


def compare(args, out: Output, client: WorkbenchClient) -> int:
    comparison = client.compare_projects(args.first, args.second)

    def table() -> None:
        print(f"{comparison.first.name}: {bench_line(comparison.first.last_benchmark)}")
        print(f"{comparison.second.name}: {bench_line(comparison.second.last_benchmark)}")
        print(f"throughput x{comparison.throughput_ratio:.2f}, median latency x{comparison.latency_ratio:.2f}")
        if not comparison.comparable:
            print("not measured alike: " + "; ".join(comparison.differences))
        if comparison.layer_types:
            rows(["LAYER TYPE", "FIRST MS", "PRECISION", "SECOND MS", "PRECISION"],
                 [[t.layer_type, f"{t.first_time_ms:.2f}", ",".join(t.first_precisions) or "-",
                   f"{t.second_time_ms:.2f}", ",".join(t.second_precisions) or "-"] for t in comparison.layer_types])

    out.result(comparison, table)
    return 0
