"""Category filters on the recommendation routes (issue 19), with the in-process fakes: each tier
gets the filter and answers k items of the allowed categories while enough exist (fewer only
when they run out); every remote answer is checked against the filter (a model that ignores it,
such as a Two-Tower version exported before the filter, is refused with rule ``category`` and
the next tier serves); bad filters are a 422 with a reason; a catalogue without item categories
is a 503 ``filters_unavailable``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.main import create_app
from gateway.schemas import MAX_CATEGORY_LENGTH, MAX_FILTER_CATEGORIES
from gateway.tiers.popular import PopularList
from gateway.tiers.types import CategoryFilter
from gateway.tiers.validation import InvalidAnswer, Rule, check_answer
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import CATALOGUE, N_ITEMS, Fakes, category_of, seen_of
from tests.gateway.test_api import make_settings

URL = "/v1/recommendations"
USER = 7  # known to the fakes: features, the primary and ALS


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def client(fakes: Fakes) -> Iterator[AppClient]:
    with AppClient(create_app(make_settings(), components=fakes.factory)) as c:
        yield c


def _tier(fakes: Fakes, tier: str) -> None:
    """Make ``tier`` the one that serves a known user."""
    if tier in ("als", "popular"):
        fakes.primary.mode = "error"
    if tier == "popular":
        fakes.fallback.mode = "error"


def _items(body: dict) -> list[int]:
    return [i["item_id"] for i in body["items"]]


def _allowed(include=(), exclude=(), *, user: int = USER) -> list[int]:
    cat = CategoryFilter.of(include, exclude)
    return [i for i in CATALOGUE if cat.allows(category_of(i)) and i not in seen_of(user)]


@pytest.mark.parametrize("tier", ["two_tower", "als", "popular"])
def test_each_tier_serves_k_items_of_the_allowed_categories(
    client: AppClient, fakes: Fakes, tier: str
) -> None:
    _tier(fakes, tier)
    r = client.post(URL, json={"user_id": USER, "k": 30, "include_categories": ["c1"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["served_by"] == tier
    items = _items(body)
    assert len(items) == 30 == len(set(items))  # 50 items are c1: k items still come back
    assert {category_of(i) for i in items} == {"c1"}
    assert not set(items) & set(seen_of(USER))
    if tier != "popular":  # the remote tier got the filter (it ranks inside it)
        remote = fakes.primary if tier == "two_tower" else fakes.fallback
        assert remote.last_categories == CategoryFilter(include=("c1",))


@pytest.mark.parametrize("tier", ["two_tower", "als", "popular"])
def test_fewer_items_only_when_the_allowed_catalogue_runs_out(
    client: AppClient, fakes: Fakes, tier: str
) -> None:
    _tier(fakes, tier)
    allowed = _allowed(["c2"])
    exclude = allowed[3:]  # all but three allowed items excluded
    r = client.post(
        URL, json={"user_id": USER, "k": 10, "include_categories": ["c2"], "exclude": exclude}
    )
    body = r.json()
    assert r.status_code == 200 and body["served_by"] == tier, body
    assert sorted(_items(body)) == sorted(allowed[:3])


def test_get_takes_repeated_query_parameters(client: AppClient, fakes: Fakes) -> None:
    r = client.get(
        f"{URL}/{USER}",
        params={"k": 20, "include_categories": ["c0", "c3"], "exclude_categories": ["c3"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["served_by"] == "two_tower"
    assert {category_of(i) for i in _items(r.json())} == {"c0"} and len(_items(r.json())) == 20


def test_exclude_categories_alone(client: AppClient) -> None:
    r = client.post(URL, json={"user_id": USER, "k": 100, "exclude_categories": ["c0", "c1"]})
    items = _items(r.json())
    # 100 items are c2 or c3, and the user has seen one of them (item 7): 99 are left
    assert sorted(items) == _allowed(exclude=["c0", "c1"]) and len(items) == 99


def test_cold_start_gets_popular_items_of_the_allowed_categories(client: AppClient) -> None:
    r = client.post(URL, json={"user_id": 999, "k": 5, "include_categories": ["c3"]})
    body = r.json()
    assert body["served_by"] == "popular" and body["fallback_reason"] == "cold_start"
    assert _items(body) == [3, 7, 11, 15, 19]  # the five most popular c3 items


def test_empty_lists_are_no_filter(client: AppClient) -> None:
    r = client.post(
        URL, json={"user_id": USER, "k": 8, "include_categories": [], "exclude_categories": []}
    )
    assert r.status_code == 200 and len({category_of(i) for i in _items(r.json())}) > 1


def test_a_primary_that_ignores_the_filter_is_refused_and_als_serves(
    client: AppClient, fakes: Fakes
) -> None:
    """A Two-Tower version exported before the filter existed answers its unfiltered top-k:
    the answer check refuses it (rule ``category``) and ALS serves the filtered answer."""
    fakes.primary.mode = "unfiltered"
    r = client.post(URL, json={"user_id": USER, "k": 10, "include_categories": ["c1"]})
    body = r.json()
    assert body["served_by"] == "als" and body["fallback_reason"] == "error"
    assert {category_of(i) for i in _items(body)} == {"c1"}
    metrics = client.get("/metrics").text
    assert 'gateway_invalid_answers_total{rule="category",tier="two_tower"} 1.0' in metrics
    # an unfiltered request still goes to the same primary
    assert client.get(f"{URL}/{USER}?k=5").json()["served_by"] == "two_tower"


def test_an_als_answer_outside_the_filter_is_refused_and_popular_serves(
    client: AppClient, fakes: Fakes
) -> None:
    fakes.primary.mode = "error"
    fakes.fallback.mode = "unfiltered"
    r = client.post(URL, json={"user_id": USER, "k": 10, "exclude_categories": ["c0"]})
    body = r.json()
    assert body["served_by"] == "popular"
    assert "c0" not in {category_of(i) for i in _items(body)} and len(_items(body)) == 10


BAD = [
    {"include_categories": [f"c{i}" for i in range(MAX_FILTER_CATEGORIES + 1)]},
    {"exclude_categories": [""]},
    {"include_categories": ["a,b"]},
    {"include_categories": ["x" * (MAX_CATEGORY_LENGTH + 1)]},
    {"include_categories": ["tab\there"]},
    {"include_categories": [3]},
    {"include_categories": "c1"},
    {"exclude_categories": None},
]


@pytest.mark.parametrize("extra", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_filters_are_a_422_with_a_reason(client: AppClient, extra: dict) -> None:
    r = client.post(URL, json={"user_id": USER, "k": 5, **extra})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_request" and "categories" in body["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"include_categories": [f"c{i}" for i in range(MAX_FILTER_CATEGORIES + 1)]},
        {"exclude_categories": ""},
        {"include_categories": "a,b"},
        {"include_categories": "line\n"},
    ],
)
def test_bad_get_filters_are_a_422(client: AppClient, params: dict) -> None:
    r = client.get(f"{URL}/{USER}", params=params)
    assert r.status_code == 422, r.text
    assert "categories" in r.json()["detail"]


def test_a_catalogue_without_categories_answers_503_filters_unavailable(fakes: Fakes) -> None:
    fakes.popular = PopularList.from_arrays(
        items=CATALOGUE, counts=[N_ITEMS - i for i in CATALOGUE]
    )
    with AppClient(create_app(make_settings(), components=fakes.factory)) as client:
        r = client.post(URL, json={"user_id": USER, "k": 5, "include_categories": ["c1"]})
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "filters_unavailable"
        assert fakes.primary.calls == 0  # refused before any tier is asked
        assert client.post(URL, json={"user_id": USER, "k": 5}).status_code == 200


def test_the_answer_check_counts_only_the_allowed_catalogue() -> None:
    fakes = Fakes()
    cat = CategoryFilter.of(["c0"])
    c0 = [i for i in CATALOGUE if category_of(i) == "c0"]
    skip = set(c0[2:])
    from gateway.tiers.types import TierResult

    ok = TierResult(item_ids=c0[:2], scores=[2.0, 1.0], model_version="m")
    assert check_answer(ok, k=10, skip=skip, catalogue=fakes.popular, categories=cat) == ok
    short = TierResult(item_ids=c0[:1], scores=[2.0], model_version="m")
    with pytest.raises(InvalidAnswer) as info:
        check_answer(short, k=10, skip=skip, catalogue=fakes.popular, categories=cat)
    assert info.value.rule is Rule.COUNT
    outside = TierResult(item_ids=[c0[0], 1], scores=[2.0, 1.0], model_version="m")
    with pytest.raises(InvalidAnswer) as info:
        check_answer(outside, k=2, skip=set(), catalogue=fakes.popular, categories=cat)
    assert info.value.rule is Rule.CATEGORY


def test_the_mf_client_sends_the_filter_and_a_409_is_a_tier_failure() -> None:
    """The ALS tier's request carries the filter as repeated query parameters; the MF service's
    409 ``categories_unavailable`` (an artifact without categories) is that tier's error."""
    import asyncio
    import json
    from urllib.parse import parse_qs, urlsplit

    from gateway.errors import UpstreamError
    from gateway.tiers.mf import MfFallback

    seen: list[str] = []

    async def run(status: int, body: dict) -> object:
        payload = json.dumps(body).encode()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head.decode().split(" ")[1])
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        client = MfFallback(
            base_url=f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", timeout_s=1
        )
        try:
            return await client.recommend(
                7,
                k=2,
                exclude=[1],
                timeout_s=1,
                categories=CategoryFilter.of(["a b", "c"], ["d"]),
            )
        finally:
            await client.close()
            srv.close()

    ok = {
        "user_id": 7,
        "items": [{"item_id": 3, "score": 0.5}],
        "model_version": "v",
        "known_user": True,
    }
    assert getattr(asyncio.run(run(200, ok)), "item_ids", None) == [3]
    query = parse_qs(urlsplit(seen[0]).query)
    assert query["include_categories"] == ["a b", "c"] and query["exclude_categories"] == ["d"]
    with pytest.raises(UpstreamError):
        asyncio.run(run(409, {"code": "categories_unavailable", "detail": "no categories"}))


def test_popular_reads_item_categories_from_the_als_artifact(tmp_path) -> None:
    """A version trained with item categories filters; an older one (none) cannot."""
    import numpy as np

    from fallback_mf.artifacts import save_als
    from tests.fallback_mf.service_helpers import tiny_model

    old = tiny_model()
    save_als(old, artifacts_dir=tmp_path, version="v1")
    popular = PopularList(artifacts_dir=tmp_path)
    assert popular.refresh() and not popular.has_categories
    new = tiny_model()
    new.item_categories = np.asarray([f"x{i % 2}" for i in new.item_ids], dtype=str)
    save_als(new, artifacts_dir=tmp_path, version="v2")
    assert popular.refresh() and popular.has_categories
    result = popular.recommend(10**9, k=3, exclude=[], categories=CategoryFilter.of(["x1"]))
    assert len(result.item_ids) == 3 and all(i % 2 == 1 for i in result.item_ids)
    ranked = [int(i) for i in popular.snapshot.items if i % 2 == 1]  # type: ignore[union-attr]
    assert result.item_ids == ranked[:3]  # the first allowed ones of the ranked list


def test_the_openapi_spec_documents_the_filters(client: AppClient) -> None:
    spec = client.get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"][URL + "/{user_id}"]["get"]["parameters"]}
    for name in ("include_categories", "exclude_categories"):
        schema = params[name]["schema"]  # a repeated parameter: an array, never null
        assert schema["type"] == "array" and schema["maxItems"] == MAX_FILTER_CATEGORIES
        assert schema["items"]["maxLength"] == MAX_CATEGORY_LENGTH
        body = spec["components"]["schemas"]["RecommendationRequest"]["properties"][name]
        assert body["maxItems"] == MAX_FILTER_CATEGORIES and body["items"]["minLength"] == 1
    post = spec["paths"][URL]["post"]["responses"]
    assert "filters_unavailable" in post["503"]["description"]
    assert "category" in post["422"]["description"]
