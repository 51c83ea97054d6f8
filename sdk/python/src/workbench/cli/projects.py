"""`workbench project create|list|get|delete|provenance`."""

from __future__ import annotations

from workbench.cli import measure
from workbench.cli.options import list_parser
from workbench.cli.output import Output, rows
from workbench.client import WorkbenchClient


def add_parser(commands) -> None:
    parser = commands.add_parser("project", help="projects")
    parser.set_defaults(handler=run)
    project = parser.add_subparsers(dest="action", required=True)
    create = project.add_parser("create")
    create.add_argument("name")
    create.add_argument("--model", default="")
    create.add_argument("--dataset", default="")
    create.add_argument("--device", default="")
    list_parser(project).add_argument("--parent", default="")
    project.add_parser("get").add_argument("id")
    project.add_parser("delete").add_argument("id")
    project.add_parser("provenance", help="every figure held for the project and what made it").add_argument("id")


def project_rows(projects) -> None:
    rows(["ID", "NAME", "MODEL", "DATASET", "DEVICE", "PARENT"],
         [[p.id, p.name, p.model_id or "-", p.dataset_id or "-", p.device, p.parent_id or "-"] for p in projects])


def run(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "create":
        project = client.create_project(args.name, model_id=args.model, dataset_id=args.dataset, device=args.device)
        out.result(project, lambda: project_rows([project]))
    elif args.action == "list":
        projects = list(client.list_projects(parent_id=args.parent, oldest_first=args.oldest_first))
        out.result(projects, lambda: project_rows(projects))
    elif args.action == "get":
        out.result(client.get_project(args.id))
    elif args.action == "delete":
        client.delete_project(args.id)
        out.result({"deleted": args.id}, lambda: print(f"deleted {args.id}"))
    elif args.action == "provenance":
        figures = client.project_provenance(args.id)
        out.result(figures, lambda: measure.figure_rows(figures))
    return 0
