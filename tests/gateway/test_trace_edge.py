"""Issue 20, item 10: a client's ``traceparent`` does not decide sampling at the edge.

The gateway starts a new root trace for every request, sampled by its own sampler, and keeps the
client's context as a span link; its upstream calls carry the gateway's context (so the MF
service and Triton, which continue what they receive, stay in the gateway's one trace:
tests/integration/test_traces.py). This replaces the old rule, where the gateway continued the
client's trace and a ``sampled`` flag forced recording.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, ParentBasedTraceIdRatio

import gateway.routes
from cascade.runtime.telemetry import client_links
from gateway.main import create_app
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import Fakes
from tests.gateway.test_api import make_settings

URL = "/v1/recommendations"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SAMPLED = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}


def traced_client(
    monkeypatch: pytest.MonkeyPatch, sampler
) -> tuple[AppClient, InMemorySpanExporter, Fakes]:  # type: ignore[no-untyped-def]
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(gateway.routes, "tracer", provider.get_tracer("test"))
    fakes = Fakes()
    return AppClient(create_app(make_settings(), components=fakes.factory)), exporter, fakes


def test_a_sampled_client_traceparent_cannot_force_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sampling off (ratio 0, or no exporter): a client's ``sampled`` flag records nothing."""
    for sampler in (ParentBasedTraceIdRatio(0.0), ParentBased(ALWAYS_OFF)):
        client, exporter, fakes = traced_client(monkeypatch, sampler)
        with client:
            for _ in range(5):
                assert client.get(f"{URL}/7?k=5", headers=SAMPLED).status_code == 200
        assert exporter.get_finished_spans() == ()
        # upstream calls carry the gateway's (unsampled) context, not the client's trace
        sent = fakes.primary.last_headers["traceparent"]
        assert CLIENT_TRACE not in sent
        assert int(sent.rsplit("-", 1)[1], 16) & 1 == 0  # flags: not sampled


def test_the_client_context_is_a_link_of_a_new_root(monkeypatch: pytest.MonkeyPatch) -> None:
    client, exporter, fakes = traced_client(monkeypatch, ParentBasedTraceIdRatio(1.0))
    unsampled = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"}
    with client:
        assert client.get(f"{URL}/7?k=5", headers=unsampled).status_code == 200
        assert client.get(f"{URL}/7?k=5").status_code == 200
    with_link, without = exporter.get_finished_spans()
    for span in (with_link, without):
        assert span.name == "gateway.recommend" and span.parent is None
        assert format(span.context.trace_id, "032x") != CLIENT_TRACE
    # the client's "not sampled" did not stop our sampler either: the decision is ours
    (link,) = with_link.links
    assert format(link.context.trace_id, "032x") == CLIENT_TRACE
    assert format(link.context.span_id, "016x") == CLIENT_SPAN
    assert without.links == ()
    # the tiers get the gateway's trace (the last request's)
    assert format(without.context.trace_id, "032x") in fakes.primary.last_headers["traceparent"]


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"traceparent", b"garbage")],
        [(b"traceparent", b"00-00000000000000000000000000000000-00f067aa0ba902b7-01")],
    ],
)
def test_no_link_without_a_valid_client_context(headers: list[tuple[bytes, bytes]]) -> None:
    assert client_links(headers) == ()
