"""How values read on a page: numbers, enum names, times, job states. Installed as Jinja2 filters."""

from __future__ import annotations

from jinja2 import Environment

from services.web import pages
from workbench import WorkbenchError
from workbench.v1 import common_pb2, quantizer_pb2


def enum_name(value: int, enum, prefix: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix).replace("_", " ").lower()
    except ValueError:
        return str(value)


def framework(value: int) -> str:
    return enum_name(value, common_pb2.Framework, "FRAMEWORK_")


def dataset_format(value: int) -> str:
    return enum_name(value, common_pb2.DatasetFormat, "DATASET_FORMAT_")


def job_state(value: int) -> str:
    return enum_name(value, common_pb2.JobState, "JOB_STATE_")


def job_kind(value: int) -> str:
    return pages.JOB_KIND_NAMES.get(value, enum_name(value, common_pb2.JobKind, "JOB_KIND_"))


def preset(config: quantizer_pb2.QuantizationConfig) -> str:
    method = enum_name(config.method, quantizer_pb2.QuantizationMethod, "QUANTIZATION_METHOD_")
    chosen = enum_name(config.preset, quantizer_pb2.QuantizationPreset, "QUANTIZATION_PRESET_")
    return f"{method}, {chosen}" if config.preset else method


def drop(value: float, config: quantizer_pb2.QuantizationConfig) -> str:
    """An accuracy drop or bound as its drop type reads: points of the metric, or a share of the parent's."""
    relative = config.drop_type == quantizer_pb2.DROP_TYPE_RELATIVE
    return f"{100 * value:.1f} %" if relative else f"{100 * value:.1f} points"


def fixed(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def percent(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f} %"


def megabytes(value: int) -> str:
    return f"{value / 1e6:,.1f} MB"


def when(timestamp) -> str:
    if not timestamp.seconds:
        return "–"
    return timestamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")


def took(job: common_pb2.Job) -> str:
    """How long a finished job ran, e.g. "done in 12.3 s"."""
    if not (job.start_time.seconds and job.end_time.seconds):
        return "done"
    seconds = (job.end_time.ToDatetime() - job.start_time.ToDatetime()).total_seconds()
    return f"done in {seconds:.1f} s"


def is_terminal(job: common_pb2.Job) -> bool:
    return job.state in pages.TERMINAL


def error_text(error: WorkbenchError) -> str:
    """The gateway's message as a person reads it (the field it concerns, when named)."""
    return f"{error.message} (field: {error.field})" if error.field else error.message


def job_event(event: common_pb2.JobEvent) -> dict:
    """One server-sent event: what the progress bar and the job's log line show."""
    data = dict(sequence=event.sequence, state=job_state(event.state), stage=event.progress.stage,
                fraction=event.progress.fraction, message=event.progress.message,
                terminal=event.state in pages.TERMINAL)
    if event.state in pages.TERMINAL and event.HasField("job"):
        data["error"] = event.job.error
        if event.state == common_pb2.JOB_STATE_SUCCEEDED:
            data["message"] = took(event.job)
        link = pages.result_link(event.job) if event.state == common_pb2.JOB_STATE_SUCCEEDED else None
        if link:
            data["result"] = dict(href=link[0], label=link[1])
    return data


def install(env: Environment) -> None:
    env.filters.update(framework=framework, dataset_format=dataset_format, job_state=job_state, job_kind=job_kind,
                       preset=preset, drop=drop, fixed=fixed, percent=percent, megabytes=megabytes, when=when,
                       took=took)
    env.globals.update(is_terminal=is_terminal, result_link=pages.result_link, JOB_KINDS=pages.JOB_KIND_NAMES)
