"""Unit tests of the MF web service, in process (httpx ASGITransport / AppClient), on a tiny model.

Fixtures: ``conftest.py``; reloads: ``test_service_reload.py``; real artifacts:
``test_service_artifacts.py``."""

from __future__ import annotations

import pytest

from fallback_mf.schemas import RecommendationResponse
from fallback_mf.service.api import parse_exclude
from fallback_mf.service.errors import InvalidRequest
from fallback_mf.service.main import create_app
from fallback_mf.service.settings import MfSettings
from tests.fallback_mf.service_helpers import (
    N_ITEMS,
    AppClient,
    FakeArtifacts,
    scorer_of,
    settings_for,
    tiny_model,
)

__all__ = ["tiny_model"]  # imported from here by tests/gateway and tests/integration


def test_known_user_gets_k_unseen_sorted_items(client: AppClient) -> None:
    model = tiny_model(seed=1)
    r = client.get("/v1/recommendations/103", params={"k": 10})
    assert r.status_code == 200, r.text
    body = RecommendationResponse.model_validate(r.json())
    assert body.known_user and body.model_version == "v1" and body.user_id == 103
    assert r.headers["X-Model-Version"] == "v1"
    ids = [i.item_id for i in body.items]
    scores = [i.score for i in body.items]
    assert len(ids) == 10 == len(set(ids))
    assert scores == sorted(scores, reverse=True)
    seen = set(model.seen.row(3).tolist())  # indices; ids are offset by 1000
    assert not {i - 1000 for i in ids} & seen
    assert set(ids) <= set(model.item_ids.tolist())
    # same answer as the model itself
    expected, _ = scorer_of(model).recommend_one(103, k=10)
    assert ids == expected


def test_exclude_and_default_k(client: AppClient) -> None:
    first = client.get("/v1/recommendations/104").json()
    assert len(first["items"]) == 20  # MF_DEFAULT_K
    top3 = [i["item_id"] for i in first["items"][:3]]
    r = client.get(
        "/v1/recommendations/104", params={"exclude": ",".join(map(str, top3)) + ", 99999"}
    )
    ids = [i["item_id"] for i in r.json()["items"]]
    assert r.status_code == 200 and not set(top3) & set(ids) and len(ids) == 20


def test_unknown_user_gets_popular_items(client: AppClient) -> None:
    r = client.get("/v1/recommendations/5", params={"k": 5, "exclude": "1001"})
    body = r.json()
    assert r.status_code == 200 and body["known_user"] is False
    popular = [int(i) for i in tiny_model(seed=1).popular.items if i != 1001][:5]
    assert [i["item_id"] for i in body["items"]] == popular


def test_k_larger_than_catalogue_returns_what_is_left(client: AppClient) -> None:
    r = client.get("/v1/recommendations/100", params={"k": 100})
    model = tiny_model(seed=1)
    assert r.status_code == 200
    assert len(r.json()["items"]) == N_ITEMS - len(set(model.seen.row(0).tolist()))


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/v1/recommendations/abc", {}, "valid integer"),
        ("/v1/recommendations/-3", {}, "greater than or equal to 0"),
        ("/v1/recommendations/1.5", {}, "valid integer"),
        ("/v1/recommendations/99999999999999999999999", {}, "less than or equal"),
        ("/v1/recommendations/1", {"k": 0}, "greater than or equal to 1"),
        ("/v1/recommendations/1", {"k": "ten"}, "valid integer"),
        ("/v1/recommendations/1", {"k": 101}, "between 1 and 100"),
        ("/v1/recommendations/1", {"exclude": "1,x"}, "comma-separated integer"),
        ("/v1/recommendations/1", {"exclude": "1,,2"}, "comma-separated integer"),
    ],
)
def test_bad_input_is_422_with_reason(
    client: AppClient, path: str, params: dict, reason: str
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    assert reason in r.text


def test_parse_exclude_limits() -> None:
    assert parse_exclude(None, limit=3) == ()
    assert parse_exclude(" ", limit=3) == ()
    assert parse_exclude("1, 2 ,3", limit=3) == (1, 2, 3)
    with pytest.raises(InvalidRequest, match="at most 3"):
        parse_exclude("1,2,3,4", limit=3)


def test_probes_and_metrics(client: AppClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model_version": "v1"}
    client.get("/v1/recommendations/101", params={"k": 3})
    client.get("/v1/recommendations/abc")
    text = client.get("/metrics").text
    assert (
        'mf_requests_total{method="GET",route="/v1/recommendations/{user_id}",status="200"} 1.0'
        in text
    )
    assert 'mf_request_errors_total{route="/v1/recommendations/{user_id}",status="422"} 1.0' in text
    assert 'mf_model_info{version="v1"} 1.0' in text
    assert (
        'mf_request_duration_seconds_bucket{le="0.001",route="/v1/recommendations/{user_id}"}'
        in text
    )
    assert 'mf_recommendations_total{known_user="true"} 1.0' in text
    assert "mf_requests_in_flight" in text


def test_large_catalogue_scores_off_the_event_loop(artifacts: FakeArtifacts) -> None:
    app = create_app(settings_for(artifacts, inline_max_items=0), loader=artifacts)
    with AppClient(app) as c:
        r = c.get("/v1/recommendations/102", params={"k": 4})
        assert r.status_code == 200 and len(r.json()["items"]) == 4


def test_settings_refuse_unsafe_values() -> None:
    with pytest.raises(ValueError, match="default_k"):
        MfSettings(default_k=50, max_k=10)
    with pytest.raises(ValueError, match="folder name"):
        MfSettings(version="../etc")
    with pytest.raises(ValueError):
        MfSettings(max_k=0)


def test_traceparent_is_continued(client: AppClient) -> None:
    """Kept deliberately after issue 20 (item 10): the MF service is not an edge, its caller is
    the gateway, which now starts a new root per client request (tests/gateway/
    test_trace_edge.py), so the ``traceparent`` arriving here is the gateway's own decision and
    continuing it keeps one trace per request."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = client.app.state.tracer_provider
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    client.get(
        "/v1/recommendations/101", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    )
    client.get("/healthz")
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["GET /v1/recommendations/{user_id}"]
    assert format(spans[0].context.trace_id, "032x") == trace_id
    assert format(spans[0].parent.span_id, "016x") == "00f067aa0ba902b7"


def test_openapi_documents_schema_and_errors(client: AppClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/recommendations/{user_id}"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "RecommendationResponse"
    )
    assert {"422", "503"} <= set(op["responses"])
    assert "internal" in spec["paths"]["/admin/reload"]["post"]["tags"]
