"""`workbench job list|get|watch|cancel`."""

from __future__ import annotations

from workbench.cli.options import list_parser
from workbench.cli.output import Output, job_state, progress_printer, rows
from workbench.client import WorkbenchClient
from workbench.v1 import common_pb2


def add_parser(commands) -> None:
    parser = commands.add_parser("job", help="jobs")
    parser.set_defaults(handler=run)
    job = parser.add_subparsers(dest="action", required=True)
    job_list = list_parser(job)
    job_list.add_argument("--project", default="")
    job_list.add_argument("--state", default="", choices=["", "queued", "running", "succeeded", "failed", "cancelled"])
    for action in ("get", "watch", "cancel"):
        job.add_parser(action).add_argument("id")


def job_rows(jobs) -> None:
    rows(["ID", "KIND", "STATE", "PROJECT", "PROGRESS", "ERROR"],
         [[j.id, common_pb2.JobKind.Name(j.kind).removeprefix("JOB_KIND_"), job_state(j), j.project_id or "-",
           f"{j.progress.fraction * 100:.0f}%", j.error or ""] for j in jobs])


def run(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "list":
        state = common_pb2.JobState.Value(f"JOB_STATE_{args.state.upper()}") if args.state else 0
        jobs = list(client.list_jobs(project_id=args.project, state=state, oldest_first=args.oldest_first))
        out.result(jobs, lambda: job_rows(jobs))
    elif args.action == "get":
        job = client.get_job(args.id)
        out.result(job, lambda: job_rows([job]))
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
