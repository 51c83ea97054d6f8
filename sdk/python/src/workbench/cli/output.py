"""What every command prints: a result as JSON (--json) or as a table, rows in aligned columns, and a job's
progress as a one-line bar on stderr. `workbench-dev` (the services' local-stack tool) prints through these too."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from google.protobuf import json_format
from google.protobuf.message import Message

from workbench.v1 import common_pb2


def as_dict(message: Message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class Output:
    def __init__(self, as_json: bool):
        self.as_json = as_json

    def result(self, value: Any, table: Callable[[], None] | None = None) -> None:
        if self.as_json:
            if isinstance(value, Message):
                value = as_dict(value)
            elif isinstance(value, list):
                value = [as_dict(v) if isinstance(v, Message) else v for v in value]
            print(json.dumps(value, indent=2))
        elif table:
            table()
        else:
            print(json.dumps(as_dict(value) if isinstance(value, Message) else value, indent=2))


def rows(headers: list[str], body: list[list[Any]]) -> None:
    """Left-aligned columns as wide as their widest cell, two spaces apart, no trailing blanks."""
    widths = [max(len(str(x)) for x in [h, *(r[i] for r in body)]) for i, h in enumerate(headers)]
    for row in [headers, *body]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


def job_state(job: common_pb2.Job) -> str:
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

