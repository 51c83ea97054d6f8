"""`workbench optimize` prints the INT8 model's accuracy drop against the parent and the verdict on it, and sends
--max-drop with the Default method too. A scripted client: no services."""

from __future__ import annotations

from workbench.cli import build_parser
from workbench.cli.output import Output
from workbench.v1 import common_pb2, gateway_pb2, quantizer_pb2 as q

ADVICE = ("the INT8 model is 5.1 points below the parent (...): to stay within the bound, run AccuracyAware with "
          "max_drop 0.01 (CLI: --accuracy-aware --max-drop 0.01; ...)")


class Client:
    """Records the request; answers with a child project carrying `result`."""

    def __init__(self, result: q.QuantizationResult):
        self.result, self.config = result, None

    def optimize_project(self, project_id, config, name="", calibration_dataset_id=""):
        self.config = config
        return common_pb2.Job(id="job-1")

    def wait_job(self, job_id, on_event=None):
        return common_pb2.Job(id=job_id, output=common_pb2.JobOutput(project_id="prj-child"))

    def get_project(self, project_id):
        return gateway_pb2.Project(id=project_id, name="tiny INT8", parent_id="prj-parent",
                                   optimization=gateway_pb2.Optimization(result=self.result))


def optimize(capsys, result: q.QuantizationResult, *argv: str) -> tuple[str, q.QuantizationConfig]:
    args = build_parser().parse_args(["optimize", "prj-parent", *argv])
    client = Client(result)
    assert args.handler(args, Output(False), client) == 0
    return capsys.readouterr().out, client.config


def default_result(after: float, within: bool, drop_type=q.DROP_TYPE_ABSOLUTE, **drop) -> q.QuantizationResult:
    return q.QuantizationResult(
        metric_name="parent_agreement", metric_before=1.0, metric_after=after, within_max_drop=within,
        warnings=[] if within else [ADVICE],
        effective_config=q.QuantizationConfig(method=q.QUANTIZATION_METHOD_DEFAULT, max_drop=0.01, drop_type=drop_type),
        **drop)


def test_a_drop_beyond_the_bound_is_printed_with_the_verdict_and_the_advice(capsys):
    out, config = optimize(capsys, default_result(0.949, False, accuracy_drop=0.051), "--max-drop", "0.01")
    assert config.method == q.QUANTIZATION_METHOD_DEFAULT and config.max_drop == 0.01  # Default takes the bound
    assert "parent_agreement: 1.0000 -> 0.9490" in out
    assert "accuracy drop: 0.0510 absolute (5.1 points), BEYOND max_drop 0.01 (see the warning)" in out
    assert f"warning: {ADVICE}" in out


def test_a_drop_within_the_bound_reads_within(capsys):
    out, _ = optimize(capsys, default_result(0.97, True, q.DROP_TYPE_RELATIVE, accuracy_drop=0.03), "--relative")
    assert "accuracy drop: 0.0300 relative (3.0 %), within max_drop 0.01\n" in out and "warning" not in out


def test_no_drop_line_when_nothing_was_measured(capsys):
    out, _ = optimize(capsys, q.QuantizationResult(effective_config=q.QuantizationConfig()))
    assert "accuracy drop" not in out
