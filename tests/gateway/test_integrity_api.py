"""Answer integrity end to end through the in-process gateway: the real Triton and MF adapters
over a fake wire (see test_answer_integrity.py), fake features. Whatever the upstreams answer,
every response is a schema-valid 200 from some tier, never a 5xx; invalid answers open the
breaker; an exception inside a tier is that tier's error; anything that still escapes is the
documented JSON 500 with the request id.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.components import Components, build_breaker, chain_config
from gateway.main import create_app
from gateway.resilience.chain import FallbackChain
from gateway.schemas import RecommendationResponse
from gateway.tiers.mf import MfFallback
from gateway.tiers.triton import TritonPrimary
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import CATALOGUE, Fakes, seen_of
from tests.gateway.test_answer_integrity import (
    FakeGrpcClient,
    plausible_mf_body,
    plausible_outputs,
    triton_output,
)
from tests.gateway.test_api import make_settings

URL = "/v1/recommendations"
K = 4


class Wire:
    """The app's upstreams at the wire: what Triton and the MF service answer next."""

    def __init__(self) -> None:
        self.fakes = Fakes()
        self.triton = FakeGrpcClient([])
        self.mf_status = 200
        self.mf_body = b"{}"

    def mf_reply(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            self.mf_status, content=self.mf_body, headers={"content-type": "application/json"}
        )

    async def factory(self, cfg, metrics) -> Components:
        primary = TritonPrimary(url="127.0.0.1:1")
        await primary.close()
        primary._stub = self.triton
        mf = MfFallback(base_url="http://mf", timeout_s=1.0)
        await mf.client.aclose()
        mf.client = httpx.AsyncClient(
            base_url="http://mf", transport=httpx.MockTransport(self.mf_reply)
        )
        chain = FallbackChain(
            config=chain_config(cfg),
            popular=self.fakes.popular,
            breaker=build_breaker(cfg, metrics),
            metrics=metrics,
            features=self.fakes.features,
            primary=primary,
            fallback=mf,
        )
        return Components(chain=chain, primary=primary, fallback=mf, closers=[mf.close])


@pytest.fixture(scope="module")
def wire() -> Iterator[tuple[Wire, AppClient]]:
    w = Wire()
    # A breaker that never opens here: every request reaches both adapters.
    app = create_app(
        make_settings(breaker_min_calls=100_000, breaker_window=100_000, breaker_consecutive=0),
        components=w.factory,
    )
    with AppClient(app) as client:
        yield w, client


def assert_valid_response(r: httpx.Response, *, user_id: int, k: int) -> None:
    assert r.status_code == 200, r.text
    body = RecommendationResponse.model_validate_json(r.content)  # finite scores, no nulls
    items = [i.item_id for i in body.items]
    assert len(items) == k == len(set(items))
    assert not set(seen_of(user_id)).intersection(items) and set(items) <= set(CATALOGUE)
    scores = [i.score for i in body.items]
    assert scores == sorted(scores, reverse=True)
    assert r.headers["X-Request-ID"] == body.request_id


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), mf_status=st.sampled_from([200, 200, 500, 404]))
def test_every_response_is_valid_whatever_the_upstreams_answer(
    wire: tuple[Wire, AppClient], data: st.DataObject, mf_status: int
) -> None:
    w, client = wire
    outputs = data.draw(st.one_of(plausible_outputs(K), st.lists(triton_output(K), max_size=3)))
    w.triton = FakeGrpcClient(outputs)
    client.app.state.components.primary._stub = w.triton
    w.mf_status = mf_status
    w.mf_body = data.draw(plausible_mf_body(K))
    r = client.get(f"{URL}/7?k={K}")
    assert_valid_response(r, user_id=7, k=K)


def _garbage_outputs() -> list[tuple[str, str, list[int], bytes]]:
    """NaN scores and duplicate ids: what a broken model version answers."""
    ids = np.array([[5, 5, 6, 7]], dtype=np.int64)
    scores = np.array([[np.nan, 0.5, 0.4, 0.3]], dtype=np.float32)
    return [
        ("item_ids", "INT64", [1, K], ids.tobytes()),
        ("scores", "FP32", [1, K], scores.tobytes()),
    ]


def test_invalid_answers_open_the_breaker() -> None:
    w = Wire()
    w.triton = FakeGrpcClient(_garbage_outputs())
    w.mf_status = 500
    app = create_app(make_settings(), components=w.factory)  # breaker: 5 calls, 50 %
    with AppClient(app) as client:
        reasons = [client.get(f"{URL}/7?k={K}").json()["fallback_reason"] for _ in range(8)]
        assert reasons[:5] == ["error"] * 5  # each refused, served by popular
        assert set(reasons[5:]) == {"breaker_open"}
        metrics = client.get("/metrics").text
    assert 'gateway_invalid_answers_total{rule="score",tier="two_tower"} 5.0' in metrics
    assert 'outcome="invalid",tier="two_tower"' in metrics
    assert 'gateway_breaker_state{breaker="primary"} 2.0' in metrics


def test_an_exception_inside_a_tier_is_that_tiers_error() -> None:
    fakes = Fakes()

    async def crash(*args, **kwargs):
        raise ZeroDivisionError("a bug in the adapter")

    fakes.primary.recommend = crash  # type: ignore[method-assign]
    app = create_app(make_settings(), components=fakes.factory)
    with AppClient(app) as client:
        reasons = [client.get(f"{URL}/7?k=5") for _ in range(6)]
        metrics = client.get("/metrics").text
    assert all(r.status_code == 200 and r.json()["served_by"] == "als" for r in reasons)
    assert [r.json()["fallback_reason"] for r in reasons] == ["error"] * 5 + ["breaker_open"]
    assert (
        'gateway_tier_exceptions_total{exception="ZeroDivisionError",tier="two_tower"} 5.0'
        in metrics
    )


def test_mf_exception_falls_through_to_popular() -> None:
    fakes = Fakes()

    async def crash(*args, **kwargs):
        raise OverflowError("int too big to convert")

    fakes.primary.mode = "error"
    fakes.fallback.recommend = crash  # type: ignore[method-assign]
    app = create_app(make_settings(), components=fakes.factory)
    with AppClient(app) as client:
        r = client.get(f"{URL}/7?k=5")
    assert r.status_code == 200 and r.json()["served_by"] == "popular"


def test_what_still_escapes_is_the_json_500_with_the_request_id() -> None:
    fakes = Fakes()
    fakes.primary.mode = fakes.fallback.mode = "error"

    def broken(*args, **kwargs):
        raise RuntimeError("the last tier itself is broken")

    fakes.popular.recommend = broken  # type: ignore[method-assign]
    app = create_app(make_settings(), components=fakes.factory)
    with AppClient(app) as client:
        r = client.get(f"{URL}/7?k=5", headers={"X-Request-ID": "req-42"})
        metrics = client.get("/metrics").text
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "code": "internal",
        "detail": "internal error; quote the request id when reporting it",
        "request_id": "req-42",
    }
    assert r.headers["X-Request-ID"] == "req-42"
    assert 'code="internal"' in metrics


def test_a_non_finite_score_never_reaches_the_json() -> None:
    fakes = Fakes()

    def nan_popular(user_id, *, k, exclude):
        result = type(fakes.popular).recommend(fakes.popular, user_id, k=k, exclude=exclude)
        result.scores[0] = float("nan")
        return result

    fakes.primary.mode = fakes.fallback.mode = "error"
    fakes.popular.recommend = nan_popular  # type: ignore[method-assign]
    app = create_app(make_settings(), components=fakes.factory)
    with AppClient(app) as client:
        r = client.get(f"{URL}/7?k=5")
    assert r.status_code == 500 and r.json()["code"] == "internal"
    assert "null" not in r.text
