"""`workbench report evaluate|list|show`: accuracy reports and the INT8-versus-parent comparison."""

from __future__ import annotations

from workbench.cli.options import list_parser
from workbench.cli.output import Output, as_dict, progress_printer, rows
from workbench.client import WorkbenchClient


def add_parser(commands) -> None:
    parser = commands.add_parser("report", help="accuracy reports")
    parser.set_defaults(handler=run)
    report = parser.add_subparsers(dest="action", required=True)
    report.add_parser("evaluate", help="mAP when annotated; a child project is compared with its parent"
                      ).add_argument("project")
    list_parser(report).add_argument("--project", default="")
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


def run(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "evaluate":
        done = client.wait_job(client.evaluate_project(args.project).id, on_event=progress_printer(quiet=args.json))
        report = client.get_report(done.output.report_id)
        out.result(report, lambda: report_summary(report))
    elif args.action == "list":
        reports = list(client.list_reports(args.project, oldest_first=args.oldest_first))
        out.result(reports, lambda: rows(["ID", "PROJECT", "PARENT", "AP", "AP50", "AGREEMENT", "F1"], [
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
        found = list(client.report_rows(args.id, advanced=args.advanced, order_by=order_by(args),
                                        only_differences=args.differences, class_name=args.class_name))

        def show() -> None:
            report_summary(report)
            if report.parent_id:
                headers = ["IMAGE", "ID", *(["CLASS"] if args.advanced else []), "A", "B", "MATCHES",
                           *(["PRECISION"] if args.advanced else [])]
                rows(headers, [[r.image, r.image_id, *([r.class_name] if args.advanced else []), r.a, r.b, r.matches,
                                *([f"{r.precision:.2f}" if r.has_precision else "-"] if args.advanced else [])]
                               for r in found])

        out.result({"report": as_dict(report), "rows": [as_dict(r) for r in found]}, show)
    return 0


def order_by(args) -> str:
    """--order-by b --descending as the gateway spells it ("-b"); a leading '-' (--order-by=-b) still works."""
    columns = [c.strip() for c in args.order_by.split(",") if c.strip()]
    if args.descending:
        columns = [c[1:] if c.startswith("-") else "-" + c for c in columns]
    return ",".join(columns)


def report_summary(report) -> None:
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
