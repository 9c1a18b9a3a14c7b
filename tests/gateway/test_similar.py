"""``GET /v1/items/{item_id}/similar``: the route end to end through the in-process gateway with
fake tiers (tests/gateway/similar_fakes.py), the chain's deadline and breaker semantics on an
injected clock, and the two client adapters' decoding of untrusted answers.

The real Triton model and MF service: tests/integration/test_similar_items.py."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest
from tritonclient.grpc import service_pb2

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.main import create_app
from gateway.metrics import GatewayMetrics
from gateway.resilience.breaker import CircuitBreaker
from gateway.resilience.chain import ChainConfig
from gateway.resilience.config import BreakerConfig
from gateway.schemas import FallbackReason, Tier
from gateway.similar import SimilarChain
from gateway.tiers.mf import MfFallback
from gateway.tiers.popular import PopularList
from gateway.tiers.similar_mf import MfSimilar
from gateway.tiers.similar_triton import decode
from gateway.tiers.similar_types import ItemNotFound, UnknownItem
from gateway.tiers.validation import InvalidAnswer, Rule
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import CATALOGUE, N_ITEMS, popular_list
from tests.gateway.similar_fakes import FakeSimilarTier, SimilarFakes, neighbours
from tests.gateway.test_api import calm, make_settings
from two_tower import similar_contract as sc

URL = "/v1/items/{}/similar"


@pytest.fixture
def fakes() -> SimilarFakes:
    return SimilarFakes()


@pytest.fixture
def client(fakes: SimilarFakes) -> Iterator[AppClient]:
    app = calm(create_app(make_settings(), components=fakes.factory))
    with AppClient(app) as c:
        yield c


def metric(client: AppClient, name: str, **labels: str) -> float:
    value = client.app.state.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def assert_similar(body: dict, *, item_id: int, k: int) -> None:
    items = [i["item_id"] for i in body["items"]]
    scores = [i["score"] for i in body["items"]]
    assert body["item_id"] == item_id
    assert len(items) == k == len(set(items)) and item_id not in items
    assert set(items) <= set(CATALOGUE)
    assert scores == sorted(scores, reverse=True) and all(math.isfinite(s) for s in scores)


# -- the route ---------------------------------------------------------------------------------


def test_the_primary_serves_the_nearest_items(client: AppClient, fakes: SimilarFakes) -> None:
    r = client.get(URL.format(40), params={"k": 6}, headers={"X-Request-ID": "sim-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_similar(body, item_id=40, k=6)
    assert [i["item_id"] for i in body["items"]] == neighbours(40, 6)[0]
    assert body["served_by"] == "two_tower" and body["fallback_reason"] is None
    assert body["model_version"] == "two_tower_similar/3" and body["request_id"] == "sim-1"
    assert r.headers["X-Served-By"] == "two_tower" and r.headers["X-Request-ID"] == "sim-1"
    assert "X-Fallback-Reason" not in r.headers
    assert "traceparent" in fakes.similar_primary.last_headers
    assert fakes.similar_fallback.calls == 0
    assert metric(client, "gateway_similar_served_total", tier="two_tower",
                  model_version="two_tower_similar/3") == 1  # fmt: skip
    assert metric(client, "gateway_requests_total", route="/v1/items/{item_id}/similar",
                  method="GET", status="200", tier="two_tower") == 1  # fmt: skip


def test_default_k_and_the_item_is_never_returned(client: AppClient) -> None:
    body = client.get(URL.format(0)).json()
    assert_similar(body, item_id=0, k=20)  # GATEWAY_DEFAULT_K


def test_an_unknown_item_is_404_and_no_tier_is_asked(
    client: AppClient, fakes: SimilarFakes
) -> None:
    r = client.get(URL.format(N_ITEMS + 5), headers={"X-Request-ID": "sim-404"})
    assert r.status_code == 404
    assert r.json() == {
        "code": "unknown_item",
        "detail": f"item {N_ITEMS + 5} is not in the catalogue",
        "request_id": "sim-404",
    }
    assert fakes.similar_primary.calls == fakes.similar_fallback.calls == 0
    assert metric(client, "gateway_similar_unknown_items_total") == 1
    assert metric(client, "gateway_errors_total", route="/v1/items/{item_id}/similar",
                  code="unknown_item") == 1  # fmt: skip


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (URL.format(3), {"k": 0}),
        (URL.format(3), {"k": 101}),
        (URL.format(3), {"k": "x"}),
        (URL.format(-1), {}),
        (URL.format("abc"), {}),
        (URL.format(2**63), {}),
    ],
)
def test_bad_input_is_422(client: AppClient, path: str, params: dict) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request"


def test_k_above_max_k_is_refused_with_the_configured_limit(fakes: SimilarFakes) -> None:
    with AppClient(create_app(make_settings(max_k=10, default_k=5), components=fakes.factory)) as c:
        r = c.get(URL.format(3), params={"k": 11})
        assert r.status_code == 422 and "at most 10" in r.json()["detail"]
        spec = c.get("/openapi.json").json()
        k = next(
            p
            for p in spec["paths"]["/v1/items/{item_id}/similar"]["get"]["parameters"]
            if p["name"] == "k"
        )
        assert k["schema"] == {"type": "integer", "minimum": 1, "maximum": 10, "default": 5}


def test_the_route_needs_credentials(fakes: SimilarFakes, tmp_path) -> None:
    from gateway.edge import keys

    path = tmp_path / "keys.json"
    _, key = keys.add_key(path, client="sim", rate=1000, burst=1000)
    app = create_app(make_settings(api_keys_file=path), components=fakes.factory)
    with AppClient(app) as c:
        r = c.get(URL.format(3))
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert fakes.similar_primary.calls == 0
        r = c.get(URL.format(3), headers={"Authorization": f"Bearer {key}"})
        # Any tier: a GC pause of this test process (512 ms seen in CI) can push the fake
        # primary past its deadline; what matters here is that the key opens the route.
        assert r.status_code == 200 and r.json()["items"], r.text


@pytest.mark.parametrize(
    ("mode", "reason"), [("error", "error"), ("hang", "timeout"), ("crash", "error")]
)
def test_a_failing_primary_falls_back_to_als(
    client: AppClient, fakes: SimilarFakes, mode: str, reason: str
) -> None:
    fakes.similar_primary.mode = mode
    r = client.get(URL.format(40), params={"k": 5})
    body = r.json()
    assert r.status_code == 200 and body["served_by"] == "als"
    assert body["fallback_reason"] == reason and r.headers["X-Fallback-Reason"] == reason
    assert_similar(body, item_id=40, k=5)
    assert metric(client, "gateway_similar_fallbacks_total", reason=reason, tier="als") == 1


def test_garbage_from_the_primary_is_refused_and_counted(
    client: AppClient, fakes: SimilarFakes
) -> None:
    fakes.similar_primary.mode = "bad"  # answers the query item itself
    body = client.get(URL.format(40), params={"k": 5}).json()
    assert body["served_by"] == "als" and body["fallback_reason"] == "error"
    assert 40 not in [i["item_id"] for i in body["items"]]
    assert metric(client, "gateway_invalid_answers_total", tier="two_tower_similar",
                  rule="seen") == 1  # fmt: skip


def test_everything_down_serves_popular_items_but_the_query_item(
    client: AppClient, fakes: SimilarFakes
) -> None:
    fakes.similar_primary.mode = fakes.similar_fallback.mode = "error"
    r = client.get(URL.format(0), params={"k": 4})
    body = r.json()
    assert r.status_code == 200 and body["served_by"] == "popular"
    assert body["fallback_reason"] == "error" and body["model_version"] == "popular/v-test"
    assert [i["item_id"] for i in body["items"]] == [1, 2, 3, 4]  # item 0 is the most popular


def test_an_item_newer_than_the_two_tower_is_cold_start(
    client: AppClient, fakes: SimilarFakes
) -> None:
    body = client.get(URL.format(160), params={"k": 3}).json()
    assert body["served_by"] == "als" and body["fallback_reason"] == "cold_start"
    body = client.get(URL.format(190), params={"k": 3}).json()  # unknown to both models
    assert body["served_by"] == "popular" and body["fallback_reason"] == "cold_start"
    assert 190 not in [i["item_id"] for i in body["items"]]
    chain = client.app.state.components.similar
    assert chain.breaker.state == "closed"  # "I do not know it" is a correct answer


def test_a_failing_similar_model_opens_its_own_breaker_only(
    client: AppClient, fakes: SimilarFakes
) -> None:
    fakes.similar_primary.mode = "error"
    for _ in range(5):  # breaker_min_calls=5 in make_settings
        client.get(URL.format(40), params={"k": 3})
    calls = fakes.similar_primary.calls
    body = client.get(URL.format(40), params={"k": 3}).json()
    assert body["fallback_reason"] == "breaker_open" and body["served_by"] == "als"
    assert fakes.similar_primary.calls == calls  # not asked while open
    ready = client.get("/readyz").json()["checks"]
    assert ready["breaker_similar"] == "open" and ready["breaker"] == "closed"
    assert ready["triton_similar"] == "down"
    assert metric(client, "gateway_breaker_state", breaker="similar") == 2
    assert metric(client, "gateway_breaker_state", breaker="primary") == 0
    # the recommendations keep their primary
    assert client.get("/v1/recommendations/7?k=3").json()["served_by"] == "two_tower"
    text = generate_latest(client.app.state.metrics.registry).decode()
    assert 'gateway_breaker_state{breaker="similar"} 2.0' in text


def test_a_components_factory_without_similar_tiers_serves_popular(fakes: SimilarFakes) -> None:
    from tests.gateway.fakes import Fakes

    plain = Fakes()
    with AppClient(create_app(make_settings(), components=plain.factory)) as c:
        body = c.get(URL.format(5), params={"k": 2}).json()
        assert body["served_by"] == "popular" and body["fallback_reason"] == "error"
        assert c.get("/readyz").json()["checks"]["triton_similar"] == "unconfigured"


# -- the chain on an injected clock --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TimedTier(FakeSimilarTier):
    """Answers after ``took`` seconds of the injected clock (no real waiting)."""

    def __init__(self, name: str, clock: Clock, took: float, *, fail: bool = False) -> None:
        super().__init__(name, range(0, N_ITEMS))
        self.clock, self.took, self.fail = clock, took, fail

    async def similar(self, item_id, *, k, timeout_s, headers=None):
        self.calls += 1
        self.last_timeout_s = timeout_s
        self.clock.now += min(self.took, timeout_s)
        if self.took >= timeout_s:
            raise UpstreamTimeout("timed out")
        if self.fail:
            raise UpstreamError("failed")
        items, scores = neighbours(item_id, k)
        from gateway.tiers.types import TierResult

        return TierResult(items, scores, model_version=f"{self.name}/1")


def make_chain(clock: Clock, primary=None, fallback=None, popular=None, **breaker) -> SimilarChain:
    config = ChainConfig(deadline_s=0.25, primary_timeout_s=0.1, mf_timeout_s=0.06)
    cfg = BreakerConfig(**{"window_size": 10, "minimum_calls": 4, "slow_call_seconds": 0.1,
                           **breaker})  # fmt: skip
    return SimilarChain(
        config=config,
        popular=popular or popular_list(),
        breaker=CircuitBreaker(name="similar", config=cfg, clock=clock),
        metrics=GatewayMetrics(),
        primary=primary,
        fallback=fallback,
        clock=clock,
    )


def run(coro):
    return asyncio.run(coro)


def test_the_deadline_counts_from_arrival() -> None:
    clock = Clock()
    primary, fallback = TimedTier("p", clock, 0.01), TimedTier("f", clock, 0.01)
    chain = make_chain(clock, primary, fallback)
    # arrived 240 ms ago: 10 ms left minus the reserve, so the primary's budget is 8 ms
    out = run(chain.similar(item_id=10, k=3, arrived=clock.now - 0.240))
    assert primary.last_timeout_s == pytest.approx(0.008)
    assert out.tier is Tier.ALS or out.tier is Tier.POPULAR
    # arrived 300 ms ago: nothing left, no remote tier is asked
    primary.calls = fallback.calls = 0
    out = run(chain.similar(item_id=10, k=3, arrived=clock.now - 0.300))
    assert out.tier is Tier.POPULAR and out.reason is FallbackReason.TIMEOUT
    assert primary.calls == fallback.calls == 0
    assert chain.breaker.state == "closed"


def test_a_call_cut_short_by_the_deadline_gives_the_breaker_no_verdict() -> None:
    clock = Clock()
    primary = TimedTier("p", clock, 0.5)  # always slower than any budget
    chain = make_chain(clock, primary)
    for _ in range(6):  # budget 50 ms < the 100 ms primary timeout: our deadline, not theirs
        out = run(chain.similar(item_id=10, k=3, arrived=clock.now - 0.198))
        assert out.reason is FallbackReason.TIMEOUT
    assert chain.breaker.state == "closed"
    for _ in range(4):  # full budget: the primary's own slowness, failures
        run(chain.similar(item_id=10, k=3))
    assert chain.breaker.state == "open"
    out = run(chain.similar(item_id=10, k=3))
    assert out.reason is FallbackReason.BREAKER_OPEN and out.tier is Tier.POPULAR


def test_slow_successes_open_the_breaker_too() -> None:
    clock = Clock()
    primary = TimedTier("p", clock, 0.099)
    chain = make_chain(clock, primary, slow_call_seconds=0.05, slow_call_rate_threshold=0.5)
    for _ in range(4):
        assert run(chain.similar(item_id=10, k=3)).tier is Tier.TWO_TOWER
    assert chain.breaker.state == "open"


def test_no_catalogue_and_every_model_unknown_is_not_found() -> None:
    clock = Clock()
    empty = PopularList.from_arrays(items=[], counts=[])
    empty.snapshot = None  # nothing loaded: the catalogue cannot judge
    primary = FakeSimilarTier("p", range(0))
    fallback = FakeSimilarTier("f", range(0))
    chain = make_chain(clock, primary, fallback, popular=empty)
    with pytest.raises(ItemNotFound):
        run(chain.similar(item_id=5, k=3))


# -- the Triton adapter's decoding ----------------------------------------------------------------


def triton_response(ids, scores, *, id_type="INT64", score_type="FP32", shape=None):
    response = service_pb2.ModelInferResponse(model_name=sc.MODEL_NAME, model_version="4")
    ids_arr = np.asarray(ids, dtype=np.int64 if id_type == "INT64" else np.int32)
    score_arr = np.asarray(scores, dtype=np.float32)
    for name, dtype, arr in (("item_ids", id_type, ids_arr), ("scores", score_type, score_arr)):
        response.outputs.add(name=name, datatype=dtype, shape=shape or [1, len(arr)])
        response.raw_output_contents.append(arr.tobytes())
    return response


def test_decode_reads_a_row_and_its_padding_tail() -> None:
    result = decode(triton_response([5, 7, -1], [0.9, 0.5, -np.inf]), k=3, model_version="m/4")
    assert result.item_ids == [5, 7] and result.scores == pytest.approx([0.9, 0.5])


@pytest.mark.parametrize(
    ("response", "rule"),
    [
        (triton_response([-1, 7], [-np.inf, 0.5]), Rule.ID),
        (triton_response([5, 7], [0.9, np.nan]), Rule.SCORE),
        (triton_response([5, 7], [0.9, 0.5], id_type="INT32"), Rule.FORMAT),
        (triton_response([5, 7], [0.9, 0.5], score_type="FP64"), Rule.FORMAT),
        (triton_response([5, 7, 8], [0.9, 0.5, 0.1]), Rule.FORMAT),  # k=2 asked
        (triton_response([5, 7], [0.9, 0.5], shape=[2, 1]), Rule.FORMAT),
    ],
)
def test_decode_refuses_what_breaks_the_contract(response, rule: Rule) -> None:
    with pytest.raises(InvalidAnswer) as caught:
        decode(response, k=2, model_version="m/4")
    assert caught.value.rule is rule


def test_decode_refuses_missing_or_extra_outputs() -> None:
    response = triton_response([5, 7], [0.9, 0.5])
    del response.outputs[1]
    del response.raw_output_contents[1]
    with pytest.raises(InvalidAnswer):
        decode(response, k=2, model_version="m/4")
    response = triton_response([5, 7], [0.9, 0.5])
    response.outputs.add(name="item_ids", datatype="INT64", shape=[1, 2])
    response.raw_output_contents.append(np.zeros(2, np.int64).tobytes())
    with pytest.raises(InvalidAnswer):
        decode(response, k=2, model_version="m/4")


# -- the MF adapter --------------------------------------------------------------------------------


def mf_client(handler) -> MfSimilar:
    mf = MfFallback(base_url="http://mf", timeout_s=0.06)
    asyncio.run(mf.close())
    mf.client = httpx.AsyncClient(base_url="http://mf", transport=httpx.MockTransport(handler))
    return MfSimilar(mf)


def ask_mf(handler, item_id: int = 5, k: int = 2):
    client = mf_client(handler)
    return asyncio.run(client.similar(item_id, k=k, timeout_s=0.06))


def test_mf_answer_is_decoded() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/items/5/similar" and request.url.params["k"] == "2"
        return httpx.Response(200, json={"item_id": 5, "model_version": "v9",
                                         "items": [{"item_id": 6, "score": 0.8},
                                                   {"item_id": 4, "score": 0.7}]})  # fmt: skip

    result = ask_mf(handler)
    assert result.item_ids == [6, 4] and result.model_version == "als/v9"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, b'{"code": "unknown_item", "detail": "x"}', UnknownItem),
        (404, b'{"code": "not_found", "detail": "x"}', UpstreamError),
        (503, b"{}", UpstreamUnavailable),
        (200, b"[1, 2]", InvalidAnswer),
        (200, b'{"item_id": 6, "model_version": "v", "items": []}', InvalidAnswer),
        (200, b'{"item_id": 5, "model_version": "v", "items": [{"item_id": 6, "score": NaN}]}',
         InvalidAnswer),
        (200, b'{"item_id": 5, "model_version": "v", "items": [{"item_id": -6, "score": 1}]}',
         InvalidAnswer),
        (200, b'{"item_id": 5, "model_version": "v", "items": [{"item_id": 6, "score": 1e999}]}',
         InvalidAnswer),
    ],
)  # fmt: skip
def test_mf_errors_and_garbage(status: int, body: bytes, error: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})

    with pytest.raises(error):
        ask_mf(handler)


def test_mf_answer_that_is_not_json_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>", headers={"content-type": "text/html"})

    with pytest.raises(InvalidAnswer):
        ask_mf(handler)


def test_mf_unreachable_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused /v1/items/5/similar?k=2")

    with pytest.raises(UpstreamUnavailable) as caught:
        ask_mf(handler)
    assert "/v1/items/5/" not in caught.value.detail  # the item id stays out of logs


def test_the_openapi_spec_documents_the_route(client: AppClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/items/{item_id}/similar"]["get"]
    assert set(op["responses"]) == {"200", "401", "404", "422", "429", "431", "500", "503"}
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/SimilarItemsResponse")
    body = spec["components"]["schemas"]["SimilarItemsResponse"]
    assert set(body["required"]) >= {"item_id", "items", "served_by", "model_version"}
    assert op["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    item = next(p for p in op["parameters"] if p["name"] == "item_id")
    assert item["schema"]["minimum"] == 0 and item["in"] == "path"
    assert op.get("security"), "the route declares the API key / bearer schemes"
