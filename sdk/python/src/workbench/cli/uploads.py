"""`workbench upload FILE [--presigned]`."""

from __future__ import annotations

from workbench.cli.output import Output
from workbench.client import WorkbenchClient


def add_parser(commands) -> None:
    upload = commands.add_parser("upload", help="upload a file (chunked through the gateway, or --presigned)")
    upload.set_defaults(handler=run)
    upload.add_argument("file")
    upload.add_argument("--presigned", action="store_true", help="PUT straight to object storage")


def run(args, out: Output, client: WorkbenchClient) -> int:
    upload = client.upload_file_presigned(args.file) if args.presigned else client.upload_file(args.file)
    out.result(upload, lambda: print(f"{upload.id}  {upload.file_name}  {upload.object.size} bytes  sha256 {upload.object.sha256}"))
    return 0
