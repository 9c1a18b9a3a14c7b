"""``POST /v1/recommendations:batch`` with the in-process fakes: one feature read and one primary
call for the batch, per-user tiers and fallback reasons, each row checked on its own (a refused
row falls back alone), limits (422, 413), the rate limit (one token per user), request ids,
metrics, the category filter per user, and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.edge import keys
from gateway.main import create_app
from gateway.schemas import BATCH_PATH
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import CATALOGUE, KNOWN_USERS, Fakes, category_of, seen_of
from tests.gateway.test_api import calm, make_settings


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def client(fakes: Fakes) -> Iterator[AppClient]:
    with AppClient(calm(create_app(make_settings(), components=fakes.factory))) as c:
        yield c


def _check(result: dict, *, k: int, exclude: tuple[int, ...] = ()) -> None:
    items = [i["item_id"] for i in result["items"]]
    assert len(items) == k == len(set(items))
    user = result["user_id"]
    forbidden = set(exclude) | set(seen_of(user) if user in KNOWN_USERS else ())
    assert not forbidden & set(items) and set(items) <= set(CATALOGUE)
    scores = [i["score"] for i in result["items"]]
    assert scores == sorted(scores, reverse=True)


def test_one_feature_read_and_one_primary_call_for_the_batch(
    client: AppClient, fakes: Fakes
) -> None:
    users = [{"user_id": u, "k": 3 + u % 4} for u in range(1, 41)]
    r = client.post(BATCH_PATH, json={"users": users}, headers={"X-Request-ID": "batch-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] == "batch-1" == r.headers["X-Request-ID"]
    assert [res["user_id"] for res in body["results"]] == list(range(1, 41))
    for i, res in enumerate(body["results"]):
        assert res["served_by"] == "two_tower" and res["fallback_reason"] is None
        assert res["request_id"] == f"batch-1-{i}"
        _check(res, k=users[i]["k"])
    assert fakes.features.many_calls == 1 and fakes.features.calls == 0
    assert fakes.primary.many_calls == 1 and fakes.primary.last_rows == 40
    assert "traceparent" in fakes.primary.last_headers


def test_each_user_falls_back_on_its_own(client: AppClient, fakes: Fakes) -> None:
    """A cold-start user goes to ALS or popular, a refused row to ALS, the others stay on the
    primary, all in one answer."""
    fakes.primary.bad_users = {5}
    users = [
        {"user_id": 3},
        {"user_id": 5},  # its row repeats an item: refused, ALS serves it
        {"user_id": 999},  # unknown everywhere: cold start, popular
        {"user_id": 7, "exclude": [100, 101], "k": 4},
    ]
    body = client.post(BATCH_PATH, json={"k": 6, "users": users}).json()
    tiers = [(r["served_by"], r["fallback_reason"]) for r in body["results"]]
    assert tiers == [
        ("two_tower", None),
        ("als", "error"),
        ("popular", "cold_start"),
        ("two_tower", None),
    ]
    _check(body["results"][0], k=6)
    _check(body["results"][3], k=4, exclude=(100, 101))
    metrics = client.get("/metrics").text
    assert 'gateway_invalid_answers_total{rule="duplicate",tier="two_tower"} 1.0' in metrics
    assert 'gateway_fallbacks_total{reason="cold_start",tier="popular"} 1.0' in metrics


@pytest.mark.parametrize(
    ("mode", "reason"), [("error", "error"), ("hang", "timeout")], ids=["error", "timeout"]
)
def test_a_failed_primary_call_sends_every_row_to_als(
    client: AppClient, fakes: Fakes, mode: str, reason: str
) -> None:
    fakes.primary.mode = mode
    body = client.post(BATCH_PATH, json={"users": [{"user_id": u} for u in (1, 2, 3)]}).json()
    assert {(r["served_by"], r["fallback_reason"]) for r in body["results"]} == {("als", reason)}
    assert fakes.primary.many_calls == 1


def test_features_unavailable_skips_the_primary_for_everyone(
    client: AppClient, fakes: Fakes
) -> None:
    fakes.features.mode = "fail"
    body = client.post(BATCH_PATH, json={"users": [{"user_id": 1}, {"user_id": 2}]}).json()
    assert {r["fallback_reason"] for r in body["results"]} == {"features_unavailable"}
    assert fakes.primary.many_calls == 0


def test_breaker_open_falls_back_per_user(fakes: Fakes) -> None:
    with AppClient(
        create_app(make_settings(breaker_force_open=True), components=fakes.factory)
    ) as client:
        body = client.post(BATCH_PATH, json={"users": [{"user_id": 1}, {"user_id": 2}]}).json()
    assert {(r["served_by"], r["fallback_reason"]) for r in body["results"]} == {
        ("als", "breaker_open")
    }
    assert fakes.primary.many_calls == 0


def test_category_filters_per_user(client: AppClient, fakes: Fakes) -> None:
    users = [
        {"user_id": 1, "k": 10, "include_categories": ["c2"]},
        {"user_id": 2, "k": 10, "exclude_categories": ["c0", "c1", "c2"]},
        {"user_id": 3, "k": 10},
    ]
    body = client.post(BATCH_PATH, json={"users": users}).json()
    cats = [{category_of(i["item_id"]) for i in r["items"]} for r in body["results"]]
    assert cats[0] == {"c2"} and cats[1] == {"c3"} and len(cats[2]) > 1
    assert all(r["served_by"] == "two_tower" and len(r["items"]) == 10 for r in body["results"])


def test_a_repeated_user_is_answered_twice_from_one_read(client: AppClient, fakes: Fakes) -> None:
    body = client.post(BATCH_PATH, json={"users": [{"user_id": 4}, {"user_id": 4}]}).json()
    assert [r["user_id"] for r in body["results"]] == [4, 4]
    assert fakes.features.many_calls == 1


BAD = [
    {"users": []},
    {"users": [{"user_id": u} for u in range(101)]},
    {"users": [{"user_id": 1, "k": 101}]},
    {"k": 0, "users": [{"user_id": 1}]},
    {"k": 101, "users": [{"user_id": 1}]},
    {"users": [{"user_id": 1, "exclude": list(range(501))}]},
    {"users": [{"user_id": -1}]},
    {"users": [{"user_id": 1, "model_version": 2}]},
    {"users": [{"user_id": 1, "include_categories": [""]}]},
    {"users": [{"user_id": "1"}]},
    {"user_id": 1},
    {"users": [{"user_id": 1}], "extra": True},
]


@pytest.mark.parametrize("body", BAD, ids=[str(i) for i in range(len(BAD))])
def test_limits_and_bad_input_are_a_422(client: AppClient, fakes: Fakes, body: dict) -> None:
    r = client.post(BATCH_PATH, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request" and r.json()["request_id"]
    assert fakes.primary.many_calls == 0


def test_the_batch_has_its_own_body_limit(fakes: Fakes) -> None:
    settings = make_settings(batch_max_body_bytes=4096)
    with AppClient(create_app(settings, components=fakes.factory)) as client:
        big = {"users": [{"user_id": 1, "exclude": list(range(400))} for _ in range(3)]}
        assert client.post(BATCH_PATH, json=big).status_code == 413
        # above the single route's 16 KiB default, within the batch's own limit
    with AppClient(create_app(make_settings(), components=fakes.factory)) as client:
        body = {"users": [{"user_id": u, "exclude": list(range(300))} for u in range(1, 31)]}
        r = client.post(BATCH_PATH, json=body)
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 30


def test_a_batch_costs_one_token_per_user(fakes: Fakes, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    _, key = keys.add_key(path, client="app", rate=0.01, burst=5)
    headers = {"Authorization": f"Bearer {key}"}
    with AppClient(
        create_app(make_settings(api_keys_file=path), components=fakes.factory)
    ) as client:
        four = {"users": [{"user_id": u} for u in (1, 2, 3, 4)]}
        assert client.post(BATCH_PATH, json=four, headers=headers).status_code == 200  # 4 of 5
        r = client.post(BATCH_PATH, json=four, headers=headers)  # 1 left: edge ok, 3 more: no
        assert r.status_code == 429 and r.json()["code"] == "rate_limited"
        assert "Retry-After" in r.headers and "4 tokens" in r.json()["detail"]
        assert client.post(BATCH_PATH, json=four).status_code == 401  # the same auth


def test_metrics_count_each_user(client: AppClient) -> None:
    client.post(BATCH_PATH, json={"users": [{"user_id": 1}, {"user_id": 2}, {"user_id": 999}]})
    metrics = client.get("/metrics").text
    assert 'gateway_served_total{model_version="two_tower/7",tier="two_tower"} 2.0' in metrics
    assert f'route="{BATCH_PATH}"' in metrics


def test_the_openapi_spec_documents_the_batch(client: AppClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"][BATCH_PATH]["post"]
    assert {"200", "401", "413", "422", "429", "503"} <= set(post["responses"])
    schemas = spec["components"]["schemas"]
    assert schemas["BatchRecommendationRequest"]["properties"]["users"]["maxItems"] == 100
    entry_k = schemas["BatchEntry"]["properties"]["k"]["anyOf"][0]
    assert entry_k == {"type": "integer", "minimum": 1, "maximum": 100}
    assert schemas["BatchEntry"]["properties"]["exclude"]["maxItems"] == 500


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"users": [{"user_id": 1}, {"user_id": 1, "k": 101}]}, "users[1].k: must be at most"),
        ({"users": [{"user_id": 1}, {"user_id": "x"}]}, "users[1].user_id: "),
        (
            {"users": [{"user_id": 1, "include_categories": ["a,b"]}]},
            "users[0].include_categories[0]: a category name may not contain a comma",
        ),
    ],
)
def test_a_422_names_the_field_in_one_form(client: AppClient, body: dict, detail: str) -> None:
    r = client.post(BATCH_PATH, json=body)
    assert r.status_code == 422 and detail in r.json()["detail"], r.text
    assert "\\x00" not in r.json()["detail"]  # no regular expression quoted at the client
