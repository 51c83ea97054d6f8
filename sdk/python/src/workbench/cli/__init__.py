"""The `workbench` command line: projects, models, datasets, uploads, calibration, measurements, reports,
packages and jobs, all through a gateway. One module a resource; each adds its commands to the parser
(`add_parser`) and names the function that runs them.

Errors print as one line on stderr (exit 1); `--json` prints machine-readable results. The local stack
(`up`, `down`, `status`, `demo`) is not here: it is `workbench-dev`, which comes with the services.
"""

from __future__ import annotations

import argparse
import sys

from workbench.cli import datasets, jobs, measure, models, optimize, packages, projects, reports, uploads
from workbench.cli.output import Output
from workbench.client import JobFailedError, WorkbenchClient, WorkbenchError

# in the order `workbench --help` lists their commands
RESOURCES = (projects, models, datasets, reports, packages, optimize, measure, uploads, jobs)
# the local-stack commands that moved to the services' `workbench-dev`
MOVED = ("up", "down", "status", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench", description="Workbench model-optimization services",
        epilog="The local stack (up, down, status, demo) is `workbench-dev`, installed with the services.")
    parser.add_argument("--address", default=None, help="gateway address (env WORKBENCH_ADDRESS, default 127.0.0.1:50051)")
    parser.add_argument("--token", default=None, help="bearer token (env WORKBENCH_TOKEN)")
    parser.add_argument("--tls-ca", default=None, help="CA certificate to trust for a TLS gateway")
    parser.add_argument("--tls-cert", default=None, help="client certificate, for a gateway that requires mutual TLS")
    parser.add_argument("--tls-key", default=None, help="the client certificate's private key")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    commands = parser.add_subparsers(dest="command", required=True)
    for resource in RESOURCES:
        resource.add_parser(commands)
    return parser


def _command_word(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The first word of argv that is not a global option or an option's value: the command."""
    takes_value = {s for a in parser._actions if a.option_strings and a.nargs != 0 for s in a.option_strings}
    words = iter(argv)
    for word in words:
        if word == "--":
            return next(words, None)
        if not word.startswith("-"):
            return word
        if word in takes_value:
            next(words, None)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    moved = _command_word(parser, argv)
    if moved in MOVED:
        print(f"workbench: `workbench {moved}` moved to the services: run `workbench-dev {moved}`", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    out = Output(args.json)
    try:
        with WorkbenchClient(args.address, token=args.token, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                             tls_key=args.tls_key) as client:
            return args.handler(args, out, client)
    except JobFailedError as exc:
        print(f"workbench: {exc.message}", file=sys.stderr)
    except WorkbenchError as exc:
        print(f"workbench: {exc}", file=sys.stderr)
    except Exception as exc:  # OS errors and the like: one line, no traceback
        message = getattr(exc, "message", None) or str(exc)
        print(f"workbench: {type(exc).__name__}: {message}", file=sys.stderr)
    return 1
