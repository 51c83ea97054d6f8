"""The `workbench` command line: the local stack, projects, uploads and jobs.

Errors print as one line on stderr (exit 1); `--json` prints machine-readable results.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from google.protobuf import json_format
from google.protobuf.message import Message

from workbench.client import JobFailedError, WorkbenchClient, WorkbenchError
from workbench.v1 import common_pb2

def _as_dict(message: Message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class Output:
    def __init__(self, as_json: bool):
        self.as_json = as_json

    def result(self, value: Any, table: Callable[[], None] | None = None) -> None:
        if self.as_json:
            if isinstance(value, Message):
                value = _as_dict(value)
            elif isinstance(value, list):
                value = [_as_dict(v) if isinstance(v, Message) else v for v in value]
            print(json.dumps(value, indent=2))
        elif table:
            table()
        else:
            print(json.dumps(_as_dict(value) if isinstance(value, Message) else value, indent=2))


def _rows(headers: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(x)) for x in [h, *(r[i] for r in rows)]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


def _state(job: common_pb2.Job) -> str:
    return common_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")


def progress_printer(quiet: bool) -> Callable[[common_pb2.JobEvent], None]:
    """A one-line progress bar on stderr, redrawn per event."""

    def show(event: common_pb2.JobEvent) -> None:
        if quiet:
            return
        p = event.progress
        filled = int(p.fraction * 30)
        state = common_pb2.JobState.Name(event.state).removeprefix("JOB_STATE_")
        line = f"\r[{'#' * filled}{'.' * (30 - filled)}] {p.fraction * 100:5.1f}% {state:<9} {p.stage} {p.message}"
        sys.stderr.write(line[:120].ljust(120))
        if event.state in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED):
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


# -- local stack ------------------------------------------------------------------------------


def _stack():
    try:
        from services.stack import LocalStack
    except ImportError:
        raise SystemExit("workbench: the local stack needs the workbench-services package (run `make setup`)")
    return LocalStack()


def _print_components(components) -> None:
    _rows(["COMPONENT", "ADDRESS", "HEALTH"], [[c.name, c.address, c.detail] for c in components])


def cmd_up(args, out: Output) -> int:
    components = _stack().up()
    out.result([vars(c) for c in components], lambda: _print_components(components))
    return 0


def cmd_down(args, out: Output) -> int:
    _stack().down()
    out.result({"stopped": True}, lambda: print("stopped"))
    return 0


def cmd_status(args, out: Output) -> int:
    components = _stack().status()
    out.result([vars(c) for c in components], lambda: _print_components(components))
    return 0 if all(c.healthy for c in components) else 1


# -- projects, uploads, jobs ------------------------------------------------------------------


def _project_rows(projects) -> None:
    _rows(["ID", "NAME", "MODEL", "DATASET", "DEVICE", "PARENT"],
          [[p.id, p.name, p.model_id or "-", p.dataset_id or "-", p.device, p.parent_id or "-"] for p in projects])


def cmd_project(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "create":
        project = client.create_project(args.name, model_id=args.model, dataset_id=args.dataset, device=args.device)
        out.result(project, lambda: _project_rows([project]))
    elif args.action == "list":
        projects = list(client.list_projects(parent_id=args.parent, oldest_first=args.oldest_first))
        out.result(projects, lambda: _project_rows(projects))
    elif args.action == "get":
        out.result(client.get_project(args.id))
    elif args.action == "delete":
        client.delete_project(args.id)
        out.result({"deleted": args.id}, lambda: print(f"deleted {args.id}"))
    elif args.action == "provenance":
        figures = client.project_provenance(args.id)
        out.result(figures, lambda: _figure_rows(figures))
    return 0


def _figure_rows(figures) -> None:
    """One line a figure: its value, the job and service that made it, and the inputs by sha256 prefix."""
    _rows(["FIGURE", "VALUE", "JOB", "SERVICE", "INPUTS"],
          [[f.name, f"{f.value:.4g} {f.unit}".strip(), f.provenance.job_id or "-", f.provenance.service or "-",
            " ".join(f"{role}={ref.sha256[:12]}" for role, ref in sorted(f.provenance.inputs.items()))]
           for f in figures])
    if figures:
        print("settings, versions and machine of each: add --json")


def cmd_upload(args, out: Output, client: WorkbenchClient) -> int:
    upload = client.upload_file_presigned(args.file) if args.presigned else client.upload_file(args.file)
    out.result(upload, lambda: print(f"{upload.id}  {upload.file_name}  {upload.object.size} bytes  sha256 {upload.object.sha256}"))
    return 0


_FRAMEWORK_FILES = {
    "cfg": common_pb2.MODEL_FILE_ROLE_DARKNET_CFG, "weights": common_pb2.MODEL_FILE_ROLE_DARKNET_WEIGHTS,
    "names": common_pb2.MODEL_FILE_ROLE_LABELS, "file": common_pb2.MODEL_FILE_ROLE_MODEL,
    "xml": common_pb2.MODEL_FILE_ROLE_IR_XML, "bin": common_pb2.MODEL_FILE_ROLE_IR_BIN,
    "archive": common_pb2.MODEL_FILE_ROLE_ARCHIVE, "params": common_pb2.MODEL_FILE_ROLE_PARAMS,
}


def _model_rows(models) -> None:
    _rows(["ID", "NAME", "FRAMEWORK", "TASK", "TYPE", "PARAMS", "GFLOPS"],
          [[m.id, m.name, common_pb2.Framework.Name(m.framework).removeprefix("FRAMEWORK_").lower(),
            m.artifact.analysis.task, m.artifact.analysis.model_type or "-",
            f"{m.artifact.analysis.parameter_count / 1e6:.1f}M", f"{m.artifact.analysis.gflops:.2f}"] for m in models])


def _model_info(model) -> None:
    a = model.artifact.analysis
    print(f"{model.id}  {model.name}  ({common_pb2.Framework.Name(model.framework).removeprefix('FRAMEWORK_').lower()})")
    print(f"task {a.task}, type {a.model_type or '-'}, {a.parameter_count:,} parameters, {a.gflops:.2f} GFLOPs, "
          f"{'quantized' if a.quantized else 'not quantized'}")
    print("weights: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(a.weight_bytes.items())))
    _rows(["", "NAME", "SHAPE", "TYPE", "LAYOUT"],
          [["input", t.name, t.shape, t.element_type, t.layout or "-"] for t in a.inputs]
          + [["output", t.name, t.shape, t.element_type, t.layout or "-"] for t in a.outputs])
    print(f"IR: s3://{model.artifact.xml.bucket}/{model.artifact.xml.key}")


def cmd_model(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "import":
        files = {role: getattr(args, flag) for flag, role in _FRAMEWORK_FILES.items() if getattr(args, flag)}
        framework = common_pb2.Framework.Value(f"FRAMEWORK_{args.framework.upper()}") if args.framework else 0
        options = common_pb2.ConvertOptions(
            input_shapes=dict(s.split("=", 1) if "=" in s else ("", s) for s in args.input_shape),
            reverse_input_channels=args.reverse_input_channels, compress_to_fp16=args.fp16,
            mean_values=[float(v) for v in args.mean.split(",")] if args.mean else [],
            scale_values=[float(v) for v in args.scale.split(",")] if args.scale else [],
            outputs=args.output,
        )
        job = client.import_model(args.name, files, framework=framework, options=options)
        done = client.wait_job(job.id, on_event=progress_printer(quiet=args.json))
        model = client.get_model(done.output.model_id)
        out.result(model, lambda: _model_info(model))
    elif args.action == "list":
        models = list(client.list_models(oldest_first=args.oldest_first))
        out.result(models, lambda: _model_rows(models))
    elif args.action == "info":
        model = client.get_model(args.id)
        out.result(model, lambda: _model_info(model))
    elif args.action == "delete":
        client.delete_model(args.id)
        out.result({"deleted": args.id}, lambda: print(f"deleted {args.id}"))
    return 0


def _dataset_rows(datasets) -> None:
    _rows(["ID", "NAME", "FORMAT", "IMAGES", "ANNOTATED", "BOXES", "CLASSES", "WARNINGS"],
          [[d.id, d.name, common_pb2.DatasetFormat.Name(d.artifact.summary.format).removeprefix("DATASET_FORMAT_"),
            d.artifact.summary.image_count, d.artifact.summary.annotated_image_count, d.artifact.summary.box_count,
            len(d.artifact.summary.classes), len(d.artifact.summary.warnings)] for d in datasets])


def _dataset_info(dataset) -> None:
    s = dataset.artifact.summary
    _dataset_rows([dataset])
    print(f"image sizes: min {s.min_width}x{s.min_height}, median {s.median_width}x{s.median_height}, "
          f"max {s.max_width}x{s.max_height}")
    if s.classes:
        _rows(["CLASS", "ID", "BOXES", "IMAGES"], [[c.name, c.id, c.boxes, c.images] for c in s.classes])
    for warning in s.warnings:
        print(f"warning: {warning}")


def cmd_dataset(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "import":
        fmt = common_pb2.DatasetFormat.Value(f"DATASET_FORMAT_{args.format.upper()}") if args.format else 0
        job = client.import_dataset(args.name, args.files, format=fmt)
        done = client.wait_job(job.id, on_event=progress_printer(quiet=args.json))
        dataset = client.get_dataset(done.output.dataset_id)
        out.result(dataset, lambda: _dataset_info(dataset))
    elif args.action == "list":
        datasets = list(client.list_datasets(oldest_first=args.oldest_first))
        out.result(datasets, lambda: _dataset_rows(datasets))
    elif args.action == "info":
        dataset = client.get_dataset(args.id)
        out.result(dataset, lambda: _dataset_info(dataset))
    elif args.action == "preview":
        png = client.preview_dataset(args.id, args.images)
        with open(args.output, "wb") as f:
            f.write(png)
        out.result({"preview": args.output, "bytes": len(png)}, lambda: print(f"wrote {args.output}"))
    elif args.action == "delete":
        client.delete_dataset(args.id)
        out.result({"deleted": args.id}, lambda: print(f"deleted {args.id}"))
    return 0


def _bench_config(args) -> common_pb2.BenchmarkConfig:
    return common_pb2.BenchmarkConfig(
        device=args.device, hint=common_pb2.PerformanceHint.Value(f"PERFORMANCE_HINT_{args.hint.upper()}"),
        streams=args.streams, infer_requests=args.requests, batch=args.batch, threads=args.threads,
        duration_seconds=args.duration, random_inputs=args.random, performance_counters=args.counters,
        cache_compiled_model=args.cache, inference_precision=args.precision,
    )


def _bench_line(r: common_pb2.BenchmarkResult) -> str:
    c = r.conditions
    flag = f"  DISTURBED: {c.disturbed_reason}" if c.disturbed else ""
    return (f"{r.throughput_fps:.1f} FPS, latency median {r.latency.median_ms:.2f} ms (p90 {r.latency.p90_ms:.2f}, "
            f"p99 {r.latency.p99_ms:.2f}), {r.runtime_streams} streams, {r.runtime_infer_requests} requests, "
            f"{r.runtime_threads} threads, {r.inference_precision} on {c.device_full_name} ({c.cpu_cores} cores, "
            f"load {c.load_average:.2f}, OpenVINO {c.openvino_version.split('-')[0]}){flag}")


def cmd_benchmark(args, out: Output, client: WorkbenchClient) -> int:
    job = client.benchmark_project(args.project, _bench_config(args))
    result = client.wait_job(job.id, on_event=progress_printer(quiet=args.json)).output.benchmark
    out.result(result, lambda: print(_bench_line(result)))
    return 0


def cmd_sweep(args, out: Output, client: WorkbenchClient) -> int:
    def numbers(text: str) -> list[int]:
        return [int(v) for v in text.split(",") if v]

    job = client.sweep_project(args.project, batches=numbers(args.batches), streams=numbers(args.streams_grid),
                               infer_requests=numbers(args.requests_grid), latency_limit_ms=args.latency_limit,
                               base=_bench_config(args))
    result = client.wait_job(job.id, on_event=progress_printer(quiet=args.json)).output.sweep

    with open(args.output, "wb") as f:
        f.write(client.sweep_chart(args.project))

    def marks(i: int) -> str:
        return ", ".join(name for index, name in ((result.best_index, "best"), (result.sweet_spot_index, "sweet spot"),
                                                  (result.best_within_latency_index, "best under the limit"))
                         if index == i)

    def table() -> None:
        _rows(["", "BATCH", "STREAMS", "REQUESTS", "FPS", "MEDIAN MS"],
              [[marks(i), p.batch or "-", p.result.runtime_streams, p.result.runtime_infer_requests,
                f"{p.result.throughput_fps:.1f}", f"{p.result.latency.median_ms:.2f}"]
               for i, p in enumerate(result.points)])
        print(f"sweet spot: the lowest latency within 5% of the best throughput; chart: {args.output}")

    out.result({"sweep": _as_dict(result), "chart": args.output}, table)
    return 0


def cmd_compare(args, out: Output, client: WorkbenchClient) -> int:
    comparison = client.compare_projects(args.first, args.second)

    def table() -> None:
        print(f"{comparison.first.name}: {_bench_line(comparison.first.last_benchmark)}")
        print(f"{comparison.second.name}: {_bench_line(comparison.second.last_benchmark)}")
        print(f"throughput x{comparison.throughput_ratio:.2f}, median latency x{comparison.latency_ratio:.2f}")
        if not comparison.comparable:
            print("not measured alike: " + "; ".join(comparison.differences))
        if comparison.layer_types:
            _rows(["LAYER TYPE", "FIRST MS", "PRECISION", "SECOND MS", "PRECISION"],
                  [[t.layer_type, f"{t.first_time_ms:.2f}", ",".join(t.first_precisions) or "-",
                    f"{t.second_time_ms:.2f}", ",".join(t.second_precisions) or "-"] for t in comparison.layer_types])

    out.result(comparison, table)
    return 0


def cmd_optimize(args, out: Output, client: WorkbenchClient) -> int:
    from workbench.v1 import quantizer_pb2 as q

    config = q.QuantizationConfig(
        method=q.QUANTIZATION_METHOD_ACCURACY_AWARE if args.accuracy_aware else q.QUANTIZATION_METHOD_DEFAULT,
        preset={"performance": q.QUANTIZATION_PRESET_PERFORMANCE, "mixed": q.QUANTIZATION_PRESET_MIXED}.get(args.preset, 0),
        overflow_fix={"enable": q.OVERFLOW_FIX_ENABLE, "first_layer": q.OVERFLOW_FIX_FIRST_LAYER,
                      "disable": q.OVERFLOW_FIX_DISABLE}.get(args.overflow_fix, 0),
        max_drop=args.max_drop, drop_type=q.DROP_TYPE_RELATIVE if args.relative else q.DROP_TYPE_ABSOLUTE,
        ignored_scope=args.ignore,
    )
    if args.subset.endswith("%"):
        config.subset_fraction = float(args.subset[:-1]) / 100
    elif args.subset:
        config.subset_size = int(args.subset)
    job = client.optimize_project(args.project, config, name=args.name,
                                  calibration_dataset_id=args.calibration_dataset)
    done = client.wait_job(job.id, on_event=progress_printer(quiet=args.json))
    child = client.get_project(done.output.project_id)

    def show() -> None:
        r = child.optimization.result
        print(f"child project {child.id} ({child.name}) from {child.parent_id}")
        print(f"{r.metric_name or 'metric'}: {r.metric_before:.4f} -> {r.metric_after:.4f}; "
              f"{r.calibration_images} calibration images; {len(r.fp_layers)} layers kept in floating point")
        if r.candidates:
            _rows(["", "CANDIDATE", "METRIC", "FPS"],
                  [["*" if c.chosen else "", c.description, f"{c.metric:.4f}", f"{c.throughput_fps:.1f}"]
                   for c in r.candidates])
        for warning in r.warnings:
            print(f"warning: {warning}")

    out.result(child, show)
    return 0


def cmd_report(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "evaluate":
        done = client.wait_job(client.evaluate_project(args.project).id, on_event=progress_printer(quiet=args.json))
        report = client.get_report(done.output.report_id)
        out.result(report, lambda: _report_summary(report))
    elif args.action == "list":
        reports = list(client.list_reports(args.project, oldest_first=args.oldest_first))
        out.result(reports, lambda: _rows(["ID", "PROJECT", "PARENT", "AP", "AP50", "AGREEMENT", "F1"], [
            [r.id, r.project_id, r.parent_id or "-", f"{r.result.metrics.ap:.4f}" if r.result.HasField("metrics") else "-",
             f"{r.result.metrics.ap50:.4f}" if r.result.HasField("metrics") else "-",
             f"{r.result.comparison.parent_agreement:.4f}" if r.parent_id else "-",
             f"{r.result.comparison.f1:.4f}" if r.parent_id else "-"] for r in reports]))
    elif args.action == "show":
        if args.image is not None:
            png = client.report_image(args.id, args.image, against_annotations=args.annotations)
            with open(args.output, "wb") as f:
                f.write(png)
            out.result({"picture": args.output, "bytes": len(png)}, lambda: print(f"wrote {args.output}"))
            return 0
        report = client.get_report(args.id)
        rows = list(client.report_rows(args.id, advanced=args.advanced, order_by=_order_by(args),
                                       only_differences=args.differences, class_name=args.class_name))

        def show() -> None:
            _report_summary(report)
            if report.parent_id:
                headers = ["IMAGE", "ID", *(["CLASS"] if args.advanced else []), "A", "B", "MATCHES",
                           *(["PRECISION"] if args.advanced else [])]
                _rows(headers, [[r.image, r.image_id, *([r.class_name] if args.advanced else []), r.a, r.b, r.matches,
                                 *([f"{r.precision:.2f}" if r.has_precision else "-"] if args.advanced else [])] for r in rows])

        out.result({"report": _as_dict(report), "rows": [_as_dict(r) for r in rows]}, show)
    return 0


def _order_by(args) -> str:
    """--order-by b --descending as the gateway spells it ("-b"); a leading '-' (--order-by=-b) still works."""
    columns = [c.strip() for c in args.order_by.split(",") if c.strip()]
    if args.descending:
        columns = [c[1:] if c.startswith("-") else "-" + c for c in columns]
    return ",".join(columns)


def _report_summary(report) -> None:
    r = report.result
    print(f"report {report.id} of project {report.project_id}, {r.images_per_second:.1f} images/s")
    if r.HasField("metrics"):
        print(f"COCO: AP {r.metrics.ap:.4f}, AP50 {r.metrics.ap50:.4f}, AP75 {r.metrics.ap75:.4f}, "
              f"AR100 {r.metrics.ar100:.4f}")
    if report.parent_id:
        c = r.comparison
        print(f"against parent {report.parent_id} on {c.images} images: A {c.total_a}, B {c.total_b}, "
              f"matches {c.matches}, F1 {c.f1:.4f}, parent agreement {c.parent_agreement:.4f} "
              f"(scores >= {c.reference_threshold:.2f})")


def cmd_package(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "export":
        done = client.wait_job(client.export_package(args.project).id, on_event=progress_printer(quiet=args.json))
        out.result({"package_id": done.output.package_id}, lambda: print(f"package {done.output.package_id}"))
    else:
        path = client.download_package(args.id, args.output)
        out.result({"path": str(path)}, lambda: print(f"wrote {path}"))
    return 0


def _job_rows(jobs) -> None:
    _rows(["ID", "KIND", "STATE", "PROJECT", "PROGRESS", "ERROR"],
          [[j.id, common_pb2.JobKind.Name(j.kind).removeprefix("JOB_KIND_"), _state(j), j.project_id or "-",
            f"{j.progress.fraction * 100:.0f}%", j.error or ""] for j in jobs])


def cmd_job(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "list":
        state = common_pb2.JobState.Value(f"JOB_STATE_{args.state.upper()}") if args.state else 0
        jobs = list(client.list_jobs(project_id=args.project, state=state, oldest_first=args.oldest_first))
        out.result(jobs, lambda: _job_rows(jobs))
    elif args.action == "get":
        job = client.get_job(args.id)
        out.result(job, lambda: _job_rows([job]))
    elif args.action == "cancel":
        job = client.cancel_job(args.id)
        out.result(job, lambda: print(f"cancel requested for {job.id}"))
    elif args.action == "watch":
        events = []
        show = progress_printer(quiet=args.json)
        for event in client.watch_job(args.id):
            show(event)
            events.append(event)
        if args.json:
            out.result(events)
        return 0 if events and events[-1].state == common_pb2.JOB_STATE_SUCCEEDED else 1
    return 0


# -- demo ---------------------------------------------------------------------------------------


def cmd_demo(args, out: Output) -> int:
    """The whole flow on the local stack (started when it is not running), ending in an HTML report."""
    from pathlib import Path

    from workbench import demo

    stack = _stack()
    components = stack.up()
    if not args.json:
        _print_components(components)
    from services.reference_models import DATA, yolov4_generated, yolov4_tiny

    if args.cfg or args.weights:
        if not (args.cfg and args.weights and args.names):
            raise SystemExit("workbench demo: --cfg, --weights and --names go together")
        files = {"cfg": Path(args.cfg), "weights": Path(args.weights), "names": Path(args.names)}
        name = Path(args.cfg).stem
    else:
        reference = yolov4_tiny() if args.model == "yolov4-tiny" else yolov4_generated()
        files, name = {"cfg": reference.cfg, "weights": reference.weights, "names": reference.names}, args.model
    dataset = demo.dataset_files(Path(args.dataset) if args.dataset else DATA / "vtest")
    say = (lambda text: None) if args.json else (lambda text: print(f"== {text}", file=sys.stderr))
    with WorkbenchClient(args.address, token=args.token, timeout=120) as client:
        result = demo.run(client, files, dataset, name=name, speed_only=args.model == "yolov4" and not args.cfg,
                          out_root=demo.reports_root(), duration_s=args.duration,
                          on_event=progress_printer(quiet=args.json), say=say)
    console = f"{stack.web_url()}reports/{result.report.id}"
    out.result({**result.summary(), "console": console},
               lambda: print(f"{demo.summary_text(result)}\nconsole: {console}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Workbench model-optimization services")
    parser.add_argument("--address", default=None, help="gateway address (env WORKBENCH_ADDRESS, default 127.0.0.1:50051)")
    parser.add_argument("--token", default=None, help="bearer token (env WORKBENCH_TOKEN)")
    parser.add_argument("--tls-ca", default=None, help="CA certificate to trust for a TLS gateway")
    parser.add_argument("--tls-cert", default=None, help="client certificate, for a gateway that requires mutual TLS")
    parser.add_argument("--tls-key", default=None, help="the client certificate's private key")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("up", help="start the local stack (S3 server and five services)")
    commands.add_parser("down", help="stop the local stack; data is kept")
    commands.add_parser("status", help="health of each local component")
    demo = commands.add_parser("demo", help="run the main flow on the local stack")
    demo.add_argument("--model", default="yolov4-tiny", choices=["yolov4-tiny", "yolov4"],
                      help="yolov4-tiny: real trained weights; yolov4: full size with generated weights (speed only)")
    demo.add_argument("--cfg", default="", help="your own Darknet cfg (with --weights and --names)")
    demo.add_argument("--weights", default="")
    demo.add_argument("--names", default="")
    demo.add_argument("--dataset", default="", help="an archive or a folder of images (default: the vtest frames)")
    demo.add_argument("--duration", type=float, default=10.0, help="seconds of each benchmark")

    project = commands.add_parser("project", help="projects").add_subparsers(dest="action", required=True)
    create = project.add_parser("create")
    create.add_argument("name")
    create.add_argument("--model", default="")
    create.add_argument("--dataset", default="")
    create.add_argument("--device", default="")
    _list_parser(project).add_argument("--parent", default="")
    project.add_parser("get").add_argument("id")
    project.add_parser("delete").add_argument("id")
    project.add_parser("provenance", help="every figure held for the project and what made it").add_argument("id")

    model = commands.add_parser("model", help="models").add_subparsers(dest="action", required=True)
    imp = model.add_parser("import", help="upload model files and convert them to OpenVINO IR")
    imp.add_argument("name")
    imp.add_argument("--framework", default="", choices=["", "darknet", "onnx", "tensorflow", "tflite", "paddle",
                                                          "openvino"], help="detected when left out")
    for flag in _FRAMEWORK_FILES:
        imp.add_argument(f"--{flag}", default="")
    imp.add_argument("--input-shape", action="append", default=[], help="[NAME=]SHAPE, e.g. [1,3,416,416]")
    imp.add_argument("--mean", default="", help="comma-separated mean values")
    imp.add_argument("--scale", default="", help="comma-separated scale values")
    imp.add_argument("--reverse-input-channels", action="store_true")
    imp.add_argument("--fp16", action="store_true", help="compress weights to FP16")
    imp.add_argument("--output", action="append", default=[], help="output tensor to keep (repeatable)")
    _list_parser(model)
    model.add_parser("info").add_argument("id")
    model.add_parser("delete").add_argument("id")

    dataset = commands.add_parser("dataset", help="datasets").add_subparsers(dest="action", required=True)
    dimp = dataset.add_parser("import", help="upload an archive (or loose files) and import it")
    dimp.add_argument("name")
    dimp.add_argument("files", nargs="+")
    dimp.add_argument("--format", default="", choices=["", "coco", "voc", "imagenet", "yolo", "images"],
                      help="detected when left out")
    _list_parser(dataset)
    dataset.add_parser("info").add_argument("id")
    prev = dataset.add_parser("preview", help="a PNG of a few images with their annotations")
    prev.add_argument("id")
    prev.add_argument("-o", "--output", default="preview.png")
    prev.add_argument("--images", type=int, default=6)
    dataset.add_parser("delete").add_argument("id")

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

    report = commands.add_parser("report", help="accuracy reports").add_subparsers(dest="action", required=True)
    report.add_parser("evaluate", help="mAP when annotated; a child project is compared with its parent"
                      ).add_argument("project")
    _list_parser(report).add_argument("--project", default="")
    show = report.add_parser("show", help="a report's comparison table, or with --image a picture")
    show.add_argument("id")
    show.add_argument("--advanced", action="store_true", help="per image and class, with precision")
    show.add_argument("--order-by", default="", metavar="COLUMNS",
                      help="sort by these comma-separated columns (image, class_name, a, b, matches, precision)")
    show.add_argument("--descending", action="store_true", help="sort from the largest down")
    show.add_argument("--differences", action="store_true", help="only images where A != B or matches < min(A, B)")
    show.add_argument("--class-name", default="")
    show.add_argument("--image", type=int, default=None, help="image id: write a PNG of both sets of boxes")
    show.add_argument("--annotations", action="store_true", help="draw the annotations instead of the parent")
    show.add_argument("-o", "--output", default="report-image.png")

    package = commands.add_parser("package", help="deployment packages").add_subparsers(dest="action", required=True)
    package.add_parser("export", help="IR, model_info, inference script, requirements").add_argument("project")
    download = package.add_parser("download")
    download.add_argument("id")
    download.add_argument("-o", "--output", default="package.tar.gz")

    optimize = commands.add_parser("optimize", help="INT8 calibration into a child project")
    optimize.add_argument("project")
    optimize.add_argument("--name", default="")
    optimize.add_argument("--preset", default="auto", choices=["auto", "performance", "mixed"],
                          help="auto measures presets x bias correction and keeps the fastest within the agreement bound")
    optimize.add_argument("--subset", default="", help="calibration images: a count, or a percentage like 50%%")
    optimize.add_argument("--overflow-fix", default="auto", choices=["auto", "enable", "first_layer", "disable"])
    optimize.add_argument("--accuracy-aware", action="store_true")
    optimize.add_argument("--max-drop", type=float, default=0.01)
    optimize.add_argument("--relative", action="store_true", help="max drop is relative, not absolute")
    optimize.add_argument("--ignore", action="append", default=[], help="node name pattern kept in FP (repeatable)")
    optimize.add_argument("--calibration-dataset", default="",
                          help="calibrate on this dataset, judge on the project's (default: the project's does both)")

    bench = commands.add_parser("benchmark", help="measure a project's throughput and latency")
    bench_flags(bench)
    sweep_cmd = commands.add_parser("sweep", help="explore inference configurations")
    bench_flags(sweep_cmd)
    sweep_cmd.add_argument("--batches", default="1", help="comma-separated, e.g. 1,2,4")
    sweep_cmd.add_argument("--streams-grid", default="", help="comma-separated stream counts")
    sweep_cmd.add_argument("--requests-grid", default="", help="comma-separated request counts")
    sweep_cmd.add_argument("--latency-limit", type=float, default=0.0, help="ms: also mark the best point under it")
    sweep_cmd.add_argument("-o", "--output", default="sweep.png", help="where to write the chart (PNG)")
    compare = commands.add_parser("compare", help="two projects side by side")
    compare.add_argument("first")
    compare.add_argument("second")

    upload = commands.add_parser("upload", help="upload a file (chunked through the gateway, or --presigned)")
    upload.add_argument("file")
    upload.add_argument("--presigned", action="store_true", help="PUT straight to object storage")

    job = commands.add_parser("job", help="jobs").add_subparsers(dest="action", required=True)
    job_list = _list_parser(job)
    job_list.add_argument("--project", default="")
    job_list.add_argument("--state", default="", choices=["", "queued", "running", "succeeded", "failed", "cancelled"])
    for action in ("get", "watch", "cancel"):
        job.add_parser(action).add_argument("id")
    return parser


def _list_parser(subcommands) -> argparse.ArgumentParser:
    """A `list` command: newest first, like `docker ps`, unless --oldest-first."""
    parser = subcommands.add_parser("list", help="newest first")
    parser.add_argument("--oldest-first", action="store_true", help="list the oldest first")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(args.json)
    try:
        if args.command in ("up", "down", "status", "demo"):
            return {"up": cmd_up, "down": cmd_down, "status": cmd_status, "demo": cmd_demo}[args.command](args, out)
        with WorkbenchClient(args.address, token=args.token, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                             tls_key=args.tls_key) as client:
            handler = {"project": cmd_project, "model": cmd_model, "dataset": cmd_dataset, "upload": cmd_upload,
                       "job": cmd_job, "benchmark": cmd_benchmark, "sweep": cmd_sweep, "compare": cmd_compare,
                       "optimize": cmd_optimize, "report": cmd_report, "package": cmd_package,
                       }[args.command]
            return handler(args, out, client)
    except JobFailedError as exc:
        print(f"workbench: {exc.message}", file=sys.stderr)
    except WorkbenchError as exc:
        print(f"workbench: {exc}", file=sys.stderr)
    except Exception as exc:  # domain errors of the local stack, OS errors: one line, no traceback
        message = getattr(exc, "message", None) or str(exc)
        print(f"workbench: {type(exc).__name__}: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
