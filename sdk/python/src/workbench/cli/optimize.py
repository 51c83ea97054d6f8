"""`workbench optimize PROJECT`: INT8 calibration into a child project."""

from __future__ import annotations

from workbench.cli.output import Output, progress_printer, rows
from workbench.client import WorkbenchClient


def add_parser(commands) -> None:
    optimize = commands.add_parser("optimize", help="INT8 calibration into a child project")
    optimize.set_defaults(handler=run)
    optimize.add_argument("project")
    optimize.add_argument("--name", default="")
    optimize.add_argument("--preset", default="auto", choices=["auto", "performance", "mixed"],
                          help="auto measures presets x bias correction and keeps the fastest within the agreement bound")
    optimize.add_argument("--subset", default="", help="calibration images: a count, or a percentage like 50%%")
    optimize.add_argument("--overflow-fix", default="auto", choices=["auto", "enable", "first_layer", "disable"])
    optimize.add_argument("--accuracy-aware", action="store_true")
    optimize.add_argument("--max-drop", type=float, default=0.01,
                          help="largest accuracy drop accepted: AccuracyAware stays within it, the Default method's "
                               "result is judged against it (0.01: 1 point)")
    optimize.add_argument("--relative", action="store_true", help="max drop is relative, not absolute")
    optimize.add_argument("--ignore", action="append", default=[], help="node name pattern kept in FP (repeatable)")
    optimize.add_argument("--calibration-dataset", default="",
                          help="calibrate on this dataset, judge on the project's (default: the project's does both)")


def run(args, out: Output, client: WorkbenchClient) -> int:
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
        if r.HasField("accuracy_drop"):
            print(drop_line(r))
        if r.candidates:
            rows(["", "CANDIDATE", "METRIC", "FPS"],
                 [["*" if c.chosen else "", c.description, f"{c.metric:.4f}", f"{c.throughput_fps:.1f}"]
                  for c in r.candidates])
        for warning in r.warnings:
            print(f"warning: {warning}")

    out.result(child, show)
    return 0


def drop_line(r) -> str:
    """The drop against the parent and the verdict on it, e.g. "accuracy drop: 0.0510 absolute (5.1 points),
    BEYOND max_drop 0.01 (see the warning)"."""
    from workbench.v1 import quantizer_pb2 as q

    relative = r.effective_config.drop_type == q.DROP_TYPE_RELATIVE
    size = f"{100 * r.accuracy_drop:.1f} {'%' if relative else 'points'}"
    verdict = "within" if r.within_max_drop else "BEYOND"
    return (f"accuracy drop: {r.accuracy_drop:.4f} {'relative' if relative else 'absolute'} ({size}), {verdict} "
            f"max_drop {r.effective_config.max_drop:g}" + ("" if r.within_max_drop else " (see the warning)"))
