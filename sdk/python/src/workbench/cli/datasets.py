"""`workbench dataset import|list|info|preview|delete`."""

from __future__ import annotations

from workbench.cli.options import list_parser
from workbench.cli.output import Output, progress_printer, rows
from workbench.client import WorkbenchClient
from workbench.v1 import common_pb2


def add_parser(commands) -> None:
    parser = commands.add_parser("dataset", help="datasets")
    parser.set_defaults(handler=run)
    dataset = parser.add_subparsers(dest="action", required=True)
    dimp = dataset.add_parser("import", help="upload an archive (or loose files) and import it")
    dimp.add_argument("name")
    dimp.add_argument("files", nargs="+")
    dimp.add_argument("--format", default="", choices=["", "coco", "voc", "imagenet", "yolo", "images"],
                      help="detected when left out")
    list_parser(dataset)
    dataset.add_parser("info").add_argument("id")
    prev = dataset.add_parser("preview", help="a PNG of a few images with their annotations")
    prev.add_argument("id")
    prev.add_argument("-o", "--output", default="preview.png")
    prev.add_argument("--images", type=int, default=6)
    dataset.add_parser("delete").add_argument("id")


def dataset_rows(datasets) -> None:
    rows(["ID", "NAME", "FORMAT", "IMAGES", "ANNOTATED", "BOXES", "CLASSES", "WARNINGS"],
         [[d.id, d.name, common_pb2.DatasetFormat.Name(d.artifact.summary.format).removeprefix("DATASET_FORMAT_"),
           d.artifact.summary.image_count, d.artifact.summary.annotated_image_count, d.artifact.summary.box_count,
           len(d.artifact.summary.classes), len(d.artifact.summary.warnings)] for d in datasets])


def dataset_info(dataset) -> None:
    s = dataset.artifact.summary
    dataset_rows([dataset])
    print(f"image sizes: min {s.min_width}x{s.min_height}, median {s.median_width}x{s.median_height}, "
          f"max {s.max_width}x{s.max_height}")
    if s.classes:
        rows(["CLASS", "ID", "BOXES", "IMAGES"], [[c.name, c.id, c.boxes, c.images] for c in s.classes])
    for warning in s.warnings:
        print(f"warning: {warning}")


def run(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "import":
        fmt = common_pb2.DatasetFormat.Value(f"DATASET_FORMAT_{args.format.upper()}") if args.format else 0
        job = client.import_dataset(args.name, args.files, format=fmt)
        done = client.wait_job(job.id, on_event=progress_printer(quiet=args.json))
        dataset = client.get_dataset(done.output.dataset_id)
        out.result(dataset, lambda: dataset_info(dataset))
    elif args.action == "list":
        datasets = list(client.list_datasets(oldest_first=args.oldest_first))
        out.result(datasets, lambda: dataset_rows(datasets))
    elif args.action == "info":
        dataset = client.get_dataset(args.id)
        out.result(dataset, lambda: dataset_info(dataset))
    elif args.action == "preview":
        png = client.preview_dataset(args.id, args.images)
        with open(args.output, "wb") as f:
            f.write(png)
        out.result({"preview": args.output, "bytes": len(png)}, lambda: print(f"wrote {args.output}"))
    elif args.action == "delete":
        client.delete_dataset(args.id)
        out.result({"deleted": args.id}, lambda: print(f"deleted {args.id}"))
    return 0
