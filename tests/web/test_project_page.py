"""The console's project page as rendered from protobuf (the template and filters the app installs, no
services): an optimized project shows its accuracy drop against the parent and the verdict, and the optimize
form takes a maximum drop for either method."""

from __future__ import annotations

import html
import re

import pytest
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData

from services.web import app, forms, present
from workbench.v1 import gateway_pb2, quantizer_pb2 as q

ADVICE = "the INT8 model is 5.1 points below the parent: run AccuracyAware with max_drop 0.01 (...)"


def render(result: q.QuantizationResult) -> str:
    env = Environment(loader=FileSystemLoader(app.HERE / "templates"), autoescape=select_autoescape(),
                      trim_blocks=True, lstrip_blocks=True)
    present.install(env)
    parent = gateway_pb2.Project(id="prj-parent", name="tiny")
    child = gateway_pb2.Project(id="prj-child", name="tiny INT8", parent_id=parent.id,
                                optimization=gateway_pb2.Optimization(result=result))
    page = env.get_template("project.html").render(
        project=child, parent=parent, model=None, dataset=None, children=[], jobs=[], reports=[], packages=[],
        best_fps=0, layers=[], sweep=child.last_sweep, datasets=[], candidates=list(result.candidates), csrf="x",
        new_request_id="r", signed_in=True)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page)))


def optimized(after: float, within: bool, drop_type=q.DROP_TYPE_ABSOLUTE, **drop) -> q.QuantizationResult:
    return q.QuantizationResult(
        metric_name="parent_agreement", metric_before=1.0, metric_after=after, within_max_drop=within,
        warnings=[] if within else [ADVICE],
        effective_config=q.QuantizationConfig(method=q.QUANTIZATION_METHOD_DEFAULT, max_drop=0.01, drop_type=drop_type),
        **drop)


def test_a_drop_beyond_the_bound_shows_with_its_verdict_and_the_advice():
    text = render(optimized(0.949, False, accuracy_drop=0.051))
    assert ("Accuracy drop against the parent: 5.1 points, beyond the maximum drop of 1.0 points (max_drop 0.01)."
            in text)
    assert ADVICE in text


def test_a_drop_within_the_bound_reads_within_and_a_relative_one_in_percent():
    assert "5.0 points, within the maximum drop" in render(optimized(0.95, True, accuracy_drop=0.05))
    text = render(optimized(0.97, True, q.DROP_TYPE_RELATIVE, accuracy_drop=0.03))
    assert "Accuracy drop against the parent: 3.0 %, within the maximum drop of 1.0 %" in text


def test_no_drop_shown_when_none_was_measured():
    assert "Accuracy drop" not in render(q.QuantizationResult(effective_config=q.QuantizationConfig()))


@pytest.mark.parametrize("method", ["default", "accuracy_aware"])
def test_the_optimize_form_takes_a_maximum_drop_for_either_method(method):
    config = forms.optimize_config(FormData({"method": method, "max_drop": "0.03"}))
    assert config.max_drop == 0.03 and config.drop_type == q.DROP_TYPE_ABSOLUTE
    with pytest.raises(forms.FormError, match="maximum accuracy drop must be between 0 and 1"):
        forms.optimize_config(FormData({"method": method, "max_drop": "2"}))
    # left empty: Default is judged against 0.01 (the quantizer's default); AccuracyAware asks for one
    if method == "default":
        assert forms.optimize_config(FormData({"method": method})).max_drop == 0
    else:
        with pytest.raises(forms.FormError, match="AccuracyAware needs a maximum accuracy drop"):
            forms.optimize_config(FormData({"method": method}))
