"""The `workbench-dev` command line: `up`, `down` and `status` of the local stack, and `demo`, the main flow on it.

Errors print as one line on stderr (exit 1); `--json` prints machine-readable results, like `workbench`, whose
output helpers it uses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.dev import demo
from services.stack import LocalStack
from workbench.cli.output import Output, progress_printer, rows
from workbench.client import JobFailedError, WorkbenchClient, WorkbenchError


def _print_components(components) -> None:
    rows(["COMPONENT", "ADDRESS", "HEALTH", "METRICS"], [[c.name, c.address, c.detail, c.metrics] for c in components])


def cmd_up(args, out: Output) -> int:
    components = LocalStack().up()
    out.result([vars(c) for c in components], lambda: _print_components(components))
    return 0


def cmd_down(args, out: Output) -> int:
    LocalStack().down()
    out.result({"stopped": True}, lambda: print("stopped"))
    return 0


def cmd_status(args, out: Output) -> int:
    components = LocalStack().status()
    out.result([vars(c) for c in components], lambda: _print_components(components))
    return 0 if all(c.healthy for c in components) else 1


def cmd_demo(args, out: Output) -> int:
    """The whole flow on the local stack (started when it is not running), ending in an HTML report."""
    stack = LocalStack()
    components = stack.up()
    if not args.json:
        _print_components(components)
    # here, not at the top: it loads the converter's Darknet code, which up, down and status never need
    from services.reference_models import DATA, yolov4_generated, yolov4_tiny

    if args.cfg or args.weights:
        if not (args.cfg and args.weights and args.names):
            raise SystemExit("workbench-dev demo: --cfg, --weights and --names go together")
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
    parser = argparse.ArgumentParser(
        prog="workbench-dev", description="The Workbench local stack: SeaweedFS, the five services and the console "
        "on localhost, and the demo on it",
        epilog="State lives in WORKBENCH_HOME (default ~/.workbench). The API commands are `workbench`'s.")
    parser.add_argument("--address", default=None,
                        help="the gateway the demo talks to (env WORKBENCH_ADDRESS, default 127.0.0.1:50051)")
    parser.add_argument("--token", default=None, help="bearer token (env WORKBENCH_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("up", help="start the local stack (S3 server and five services)").set_defaults(handler=cmd_up)
    commands.add_parser("down", help="stop the local stack; data is kept").set_defaults(handler=cmd_down)
    commands.add_parser("status", help="health of each local component").set_defaults(handler=cmd_status)
    demo_cmd = commands.add_parser("demo", help="run the main flow on the local stack")
    demo_cmd.set_defaults(handler=cmd_demo)
    demo_cmd.add_argument("--model", default="yolov4-tiny", choices=["yolov4-tiny", "yolov4"],
                          help="yolov4-tiny: real trained weights; yolov4: full size with generated weights (speed only)")
    demo_cmd.add_argument("--cfg", default="", help="your own Darknet cfg (with --weights and --names)")
    demo_cmd.add_argument("--weights", default="")
    demo_cmd.add_argument("--names", default="")
    demo_cmd.add_argument("--dataset", default="", help="an archive or a folder of images (default: the vtest frames)")
    demo_cmd.add_argument("--duration", type=float, default=10.0, help="seconds of each benchmark")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(args.json)
    try:
        return args.handler(args, out)
    except JobFailedError as exc:
        print(f"workbench-dev: {exc.message}", file=sys.stderr)
    except WorkbenchError as exc:
        print(f"workbench-dev: {exc}", file=sys.stderr)
    except Exception as exc:  # domain errors of the local stack, OS errors: one line, no traceback
        message = getattr(exc, "message", None) or str(exc)
        print(f"workbench-dev: {type(exc).__name__}: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
