"""The MF service's ``GET /v1/items/{item_id}/similar``: cosine over the served ALS item factors,
best first, never the item itself; 404 for an item the model lacks; 422 for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fallback_mf.schemas import ErrorResponse
from fallback_mf.service.similar import similar_one
from fallback_mf.similar_schemas import SimilarItemsResponse
from tests.fallback_mf.service_helpers import N_ITEMS, AppClient, scorer_of, tiny_model


def cosine_top(item_id: int, k: int, seed: int = 1) -> list[int]:
    """The expected answer, computed independently from the model's item factors."""
    model = tiny_model(seed=seed)
    factors = model.item_factors / np.linalg.norm(model.item_factors, axis=1, keepdims=True)
    pos = int(np.searchsorted(model.item_ids, item_id))
    scores = factors @ factors[pos]
    order = [int(i) for i in np.argsort(-scores, kind="stable") if i != pos]
    return [int(model.item_ids[i]) for i in order[:k]]


def test_similar_items_are_the_cosine_nearest(client: AppClient) -> None:
    r = client.get("/v1/items/1003/similar", params={"k": 7})
    assert r.status_code == 200, r.text
    body = SimilarItemsResponse.model_validate(r.json())
    assert body.item_id == 1003 and body.model_version == "v1"
    assert r.headers["X-Model-Version"] == "v1"
    ids = [i.item_id for i in body.items]
    scores = [i.score for i in body.items]
    assert ids == cosine_top(1003, 7)
    assert 1003 not in ids and len(set(ids)) == 7
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)


def test_default_k_and_a_k_beyond_the_catalogue(client: AppClient) -> None:
    assert len(client.get("/v1/items/1000/similar").json()["items"]) == 20  # MF_DEFAULT_K
    body = client.get("/v1/items/1000/similar", params={"k": 100}).json()
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == N_ITEMS - 1 and 1000 not in ids  # every other item, once


def test_unknown_item_is_404(client: AppClient) -> None:
    r = client.get("/v1/items/5/similar", params={"k": 3})
    assert r.status_code == 404
    body = ErrorResponse.model_validate(r.json())
    assert body.code == "unknown_item" and "5" in body.detail


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/items/1003/similar", {"k": 0}),
        ("/v1/items/1003/similar", {"k": 101}),
        ("/v1/items/-1/similar", {}),
        ("/v1/items/x/similar", {}),
    ],
)
def test_bad_input_is_422(client: AppClient, path: str, params: dict) -> None:
    assert client.get(path, params=params).status_code == 422


def test_zero_factors_score_zero_not_nan() -> None:
    model = tiny_model(seed=2)
    model.item_factors[4] = 0.0
    scorer = scorer_of(model)
    found = similar_one(scorer, int(model.item_ids[4]), k=5)
    assert found is not None
    assert found[1] == [0.0] * 5
    found = similar_one(scorer, int(model.item_ids[0]), k=N_ITEMS)
    assert found is not None and int(model.item_ids[4]) in found[0]
    assert all(np.isfinite(found[1]))


def test_the_openapi_spec_documents_the_route(client: AppClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/items/{item_id}/similar"]["get"]
    assert {"200", "404", "422", "503"} <= set(op["responses"])
