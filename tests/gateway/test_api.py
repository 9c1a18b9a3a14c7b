"""The gateway's HTTP API and fallback chain with in-process fake upstreams (see fakes.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from gateway.main import create_app
from gateway.settings import GatewaySettings
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import CATALOGUE, FakePrimary, Fakes, seen_of

URL = "/v1/recommendations"


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


def make_settings(**overrides) -> GatewaySettings:
    base = dict(
        triton_url="fake:1",
        mf_url="http://fake:2",
        features_enabled=True,
        deadline_ms=250,
        feature_timeout_ms=20,
        primary_timeout_ms=100,
        mf_timeout_ms=60,
        popular_refresh_s=0,
        gc_freeze=False,  # in-process apps: a freeze would pin the whole test run's objects
        # No queue-time shedding: a GC pause of this big test process between two middlewares
        # (170 ms seen) would shed a request; tests/gateway/test_overload.py turns it on.
        queue_shed_fraction=0,
        breaker_window=10,
        breaker_min_calls=5,
        breaker_wait_s=60,
        json_logs=False,
    )
    base.update(overrides)
    return GatewaySettings(**base)


def calm(app: FastAPI) -> FastAPI:
    """The loop never reads as saturated: ALS is skipped after a timeout on a saturated loop (a
    loop-lag reading over 10 ms, which a GC pause of this large test process gives), and that
    skip is tests/gateway/test_overload.py's subject, not the fallback-order tests'."""
    app.state.admission.saturated = lambda: False
    return app


@pytest.fixture
def client(fakes: Fakes) -> Iterator[AppClient]:
    app = calm(create_app(make_settings(), components=fakes.factory))
    with AppClient(app) as c:
        yield c


def assert_contract(body: dict, *, k: int, user_id: int, exclude: tuple[int, ...] = ()) -> None:
    """Exactly k unique, unseen, known items, scores sorted descending."""
    items = [i["item_id"] for i in body["items"]]
    scores = [i["score"] for i in body["items"]]
    assert len(items) == k and len(set(items)) == k
    forbidden = set(exclude) | set(seen_of(user_id) if 1 <= user_id <= 50 else ())
    assert not forbidden.intersection(items)
    assert set(items) <= set(CATALOGUE)
    assert scores == sorted(scores, reverse=True)


def test_healthy_primary_serves(client: AppClient, fakes: Fakes) -> None:
    r = client.get(f"{URL}/7?k=5", headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 200
    body = r.json()
    assert body["served_by"] == "two_tower" and body["fallback_reason"] is None
    assert r.headers["X-Served-By"] == "two_tower"
    assert r.headers["X-Request-ID"] == "abc-123" and body["request_id"] == "abc-123"
    assert body["model_version"] == "two_tower/7"
    assert_contract(body, k=5, user_id=7)
    assert "traceparent" in fakes.primary.last_headers


def test_request_id_generated_when_missing_or_unsafe(client: AppClient) -> None:
    r = client.get(f"{URL}/7", headers={"X-Request-ID": "bad id\twith spaces"})
    assert r.headers["X-Request-ID"] != "bad id\twith spaces"
    assert (
        len(r.headers["X-Request-ID"]) == 32 and r.json()["request_id"] == r.headers["X-Request-ID"]
    )
    assert len(r.json()["items"]) == 20  # default k


def test_post_with_exclude(client: AppClient) -> None:
    exclude = (199, 198, 197, 5)
    r = client.post(URL, json={"user_id": 9, "k": 10, "exclude": list(exclude)})
    assert r.status_code == 200
    assert_contract(r.json(), k=10, user_id=9, exclude=exclude)


@pytest.mark.parametrize(
    ("mode", "reason"), [("error", "error"), ("hang", "timeout"), ("bad", "error")]
)
def test_primary_fault_falls_back_to_als(fakes: Fakes, mode: str, reason: str) -> None:
    fakes.primary.mode = mode
    # A deadline far beyond the 100 ms primary timeout: a GC pause of this big test process
    # (hundreds of ms seen) must not leave the ALS tier without time; the point is the order.
    app = create_app(make_settings(deadline_ms=5000), components=fakes.factory)
    with AppClient(app) as client:
        r = client.post(URL, json={"user_id": 3, "k": 8, "exclude": [0, 1]})
    body = r.json()
    assert r.status_code == 200 and body["served_by"] == "als" and body["fallback_reason"] == reason
    assert_contract(body, k=8, user_id=3, exclude=(0, 1))
    # (the hang is bounded by the 100 ms primary timeout: "timeout" says it was cut, no clock)


def test_breaker_opens_after_failures_then_skips_primary(client: AppClient, fakes: Fakes) -> None:
    fakes.primary.mode = "error"
    for _ in range(5):  # breaker_min_calls=5, 100% failures
        assert client.get(f"{URL}/3").json()["fallback_reason"] == "error"
    calls = fakes.primary.calls
    r = client.get(f"{URL}/3")
    assert r.json()["served_by"] == "als" and r.json()["fallback_reason"] == "breaker_open"
    assert fakes.primary.calls == calls  # not called while open
    metrics = client.get("/metrics").text
    assert 'gateway_breaker_state{breaker="primary"} 2.0' in metrics
    assert 'from_state="closed",to_state="open"' in metrics


def test_feature_read_errors_are_counted_by_kind(client: AppClient, fakes: Fakes) -> None:
    for mode in ("fail", "hang"):
        fakes.features.mode = mode
        client.get(f"{URL}/4?k=5")
    metrics = client.get("/metrics").text
    assert 'gateway_feature_read_errors_total{kind="timeout"} 1.0' in metrics
    assert 'gateway_feature_read_errors_total{kind="error"} 1.0' in metrics


def test_features_unavailable_skips_primary(client: AppClient, fakes: Fakes) -> None:
    for mode in ("fail", "hang"):
        fakes.features.mode = mode
        r = client.get(f"{URL}/4?k=5")
        assert r.status_code == 200
        assert (
            r.json()["served_by"] == "als" and r.json()["fallback_reason"] == "features_unavailable"
        )
    assert fakes.primary.calls == 0


def test_features_and_mf_down_serves_popular(client: AppClient, fakes: Fakes) -> None:
    fakes.features.mode = "fail"
    fakes.fallback.mode = "error"
    r = client.get(f"{URL}/4?k=5")
    body = r.json()
    assert body["served_by"] == "popular" and body["fallback_reason"] == "features_unavailable"
    assert r.headers["X-Served-By"] == "popular"
    assert body["model_version"] == "popular/v-test"
    # features down and this list knows no training history: plain popular order
    assert [i["item_id"] for i in body["items"]] == [0, 1, 2, 3, 4]


def test_unknown_user_gets_popular_cold_start(client: AppClient, fakes: Fakes) -> None:
    r = client.get(f"{URL}/999?k=3")
    body = r.json()
    assert (
        r.status_code == 200
        and body["served_by"] == "popular"
        and body["fallback_reason"] == "cold_start"
    )
    assert [i["item_id"] for i in body["items"]] == [0, 1, 2]
    assert fakes.primary.calls == 0


def test_everything_hangs_still_answers_within_deadline(client: AppClient, fakes: Fakes) -> None:
    fakes.features.mode = "ok"
    fakes.primary.mode = "hang"
    fakes.fallback.mode = "hang"
    r = client.get(f"{URL}/5?k=4")
    # Both hangs were cut by their timeouts (no wall clock asserted: the machine is shared; the
    # drills measure the deadline under load).
    assert r.json()["served_by"] == "popular" and r.json()["fallback_reason"] == "timeout"
    assert_contract(r.json(), k=4, user_id=5)


def test_primary_and_mf_down_serves_popular_with_primary_reason(
    client: AppClient, fakes: Fakes
) -> None:
    fakes.primary.mode = "error"
    fakes.fallback.mode = "error"
    body = client.get(f"{URL}/6?k=6").json()
    assert body["served_by"] == "popular" and body["fallback_reason"] == "error"
    assert_contract(body, k=6, user_id=6)


@pytest.mark.parametrize(
    "path",
    [f"{URL}/abc", f"{URL}/-1", f"{URL}/1?k=0", f"{URL}/1?k=101", f"{URL}/1?k=x", f"{URL}/{2**64}"],
)
def test_bad_get_is_422_with_reason(client: AppClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_request" and r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "x"},
        {"user_id": 1, "k": 0},
        {"user_id": 1, "k": 101},
        {"user_id": 1, "extra": 1},
        {"user_id": 1, "exclude": list(range(501))},
        {},
    ],
)
def test_bad_post_is_422(client: AppClient, body: dict) -> None:
    r = client.post(URL, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request"


def test_oversized_body_is_413(client: AppClient) -> None:
    big = {"user_id": 1, "k": 5, "exclude": list(range(5000))}
    r = client.post(URL, json=big)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


def test_openapi_documents_every_response(client: AppClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"][URL]["post"]["responses"]
    get = spec["paths"][URL + "/{user_id}"]["get"]["responses"]
    assert {"200", "413", "422", "500"} <= set(post)
    assert {"200", "422", "500"} <= set(get)
    assert "ErrorResponse" in str(post["422"]) and "RecommendationResponse" in str(get["200"])
    k_param = next(
        p for p in spec["paths"][URL + "/{user_id}"]["get"]["parameters"] if p["name"] == "k"
    )
    assert k_param["schema"]["maximum"] == 100


def test_health_ready_and_metrics(client: AppClient, fakes: Fakes) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["popular"] == "v-test"
    fakes.primary.mode = "error"
    assert client.get("/readyz").status_code == 200  # an upstream down never makes it unready
    client.get(f"{URL}/7?k=5")
    text = client.get("/metrics").text
    for series in (
        "gateway_requests_total",
        "gateway_request_seconds_bucket",
        "gateway_fallbacks_total",
        "gateway_feature_read_seconds",
        "gateway_upstream_seconds",
        "gateway_in_flight",
        "gateway_served_total",
        "gateway_breaker_state",
        "gateway_popular_items",
    ):
        assert series in text, series
    assert 'gateway_request_seconds_bucket{le="0.001"' in text
    assert 'gateway_fallbacks_total{reason="error",tier="als"} 1.0' in text


def test_not_ready_without_popular_list(fakes: Fakes) -> None:
    fakes.popular.snapshot = None
    with AppClient(create_app(make_settings(), components=fakes.factory)) as c:
        assert c.get("/readyz").status_code == 503


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        make_settings(max_k=101)  # above the Triton contract's MAX_K
    with pytest.raises(ValueError):
        make_settings(default_k=50, max_k=20)
    with pytest.raises(ValueError):
        make_settings(feature_timeout_ms=300)
    with pytest.raises(ValueError):
        make_settings(breaker_min_calls=20, breaker_window=10)


def test_breaker_force_open_setting(fakes: Fakes) -> None:
    with AppClient(
        create_app(make_settings(breaker_force_open=True), components=fakes.factory)
    ) as c:
        body = c.get(f"{URL}/7?k=5").json()
        assert body["served_by"] == "als" and body["fallback_reason"] == "breaker_open"
        assert fakes.primary.calls == 0


def test_fewer_than_k_when_the_catalogue_runs_out(client: AppClient) -> None:
    # User 1 has seen 3 items; excluding all but 4 of the other items leaves 4 to recommend.
    left = [i for i in CATALOGUE if i not in seen_of(1)][:4]
    exclude = [i for i in CATALOGUE if i not in left and i not in seen_of(1)]
    r = client.post(URL, json={"user_id": 1, "k": 10, "exclude": exclude})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["served_by"] == "two_tower"  # the primary's short answer is accepted
    assert sorted(i["item_id"] for i in body["items"]) == sorted(left)


def test_short_answer_with_items_left_is_still_a_broken_rule(
    client: AppClient, fakes: Fakes
) -> None:
    async def short(*args, **kwargs):
        result = await FakePrimary.recommend(fakes.primary, *args, **kwargs)
        return type(result)(result.item_ids[:-1], result.scores[:-1], result.model_version)

    fakes.primary.recommend = short  # type: ignore[method-assign]
    body = client.get(URL + "/1?k=5").json()
    assert body["served_by"] == "als"
    assert len(body["items"]) == 5
