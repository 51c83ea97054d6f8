"""Services in-process with their metrics endpoints on free ports, and a scrape of one, read as numbers."""

from __future__ import annotations

import dataclasses
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import running_workbench


class Scrape(dict):
    """{(sample name, sorted labels): value} of one GET /metrics."""

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for a series not exposed yet (a counter before its first increment)."""
        return self.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of name whose labels include these."""
        return sum(v for (n, have), v in self.items() if n == name and set(labels.items()) <= set(have))


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    found = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def metered(s3_settings):
    """Every service in-process, each with a metrics endpoint on a free port, and a benchmark worker with slots."""
    settings = dataclasses.replace(s3_settings, metrics_listen="127.0.0.1:0")
    with running_workbench(settings, {"benchmark": dataclasses.replace(settings, slots=2)}) as running:
        yield running


@pytest.fixture
def spans():
    """Tracing on for one test, into memory: the SDK's TracerProvider installed before any server or channel is
    made (they decide then), and taken away afterwards so later tests run with tracing off again."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    # the API sets its provider once per process; tests must undo it (as OpenTelemetry's own tests do)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
