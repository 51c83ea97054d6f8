"""`workbench package export|download`: deployment packages."""

from __future__ import annotations

from workbench.cli.output import Output, progress_printer
from workbench.client import WorkbenchClient


def add_parser(commands) -> None:
    parser = commands.add_parser("package", help="deployment packages")
    parser.set_defaults(handler=run)
    package = parser.add_subparsers(dest="action", required=True)
    package.add_parser("export", help="IR, model_info, inference script, requirements").add_argument("project")
    download = package.add_parser("download")
    download.add_argument("id")
    download.add_argument("-o", "--output", default="package.tar.gz")


def run(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "export":
        done = client.wait_job(client.export_package(args.project).id, on_event=progress_printer(quiet=args.json))
        out.result({"package_id": done.output.package_id}, lambda: print(f"package {done.output.package_id}"))
    else:
        path = client.download_package(args.id, args.output)
        out.result({"path": str(path)}, lambda: print(f"wrote {path}"))
    return 0
