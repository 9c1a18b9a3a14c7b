"""The MF service's category filter: item categories in the ALS artifact (written at training,
optional for older versions), the scorer's mask before the top-k, the API's parameters, and the
answer for an artifact without categories (409 ``categories_unavailable``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cascade.data.dataset import item_category_names
from fallback_mf import artifact_format as fmt
from fallback_mf.artifacts import load_als, save_als
from fallback_mf.schemas import CATEGORY_PATTERN, MAX_CATEGORY_LENGTH, MAX_FILTER_CATEGORIES
from fallback_mf.service.main import create_app
from fallback_mf.service.model import load_artifact
from fallback_mf.service.scoring import CategoriesUnavailable
from fallback_mf.service.settings import MfSettings
from gateway import schemas as gateway_schemas
from tests.fallback_mf.service_helpers import N_ITEMS, AppClient, tiny_model
from two_tower import contract


def _category(item: int) -> str:
    return ("a", "b", "c", "d")[item % 4]


def _with_categories(seed: int = 0):
    model = tiny_model(seed=seed)
    model.item_categories = np.asarray([_category(int(i)) for i in model.item_ids], dtype=str)
    return model


def test_the_limits_agree_with_the_gateway_and_the_triton_contract() -> None:
    assert MAX_FILTER_CATEGORIES == gateway_schemas.MAX_FILTER_CATEGORIES
    assert MAX_FILTER_CATEGORIES == contract.MAX_FILTER_CATEGORIES
    assert MAX_CATEGORY_LENGTH == gateway_schemas.MAX_CATEGORY_LENGTH
    assert CATEGORY_PATTERN == gateway_schemas.CATEGORY_PATTERN


def test_categories_round_trip_and_older_artifacts_have_none(tmp_path: Path) -> None:
    new = save_als(_with_categories(), artifacts_dir=tmp_path, version="v2")
    old = save_als(tiny_model(), artifacts_dir=tmp_path, version="v1")
    categories = fmt.read_item_categories(new)
    assert categories is not None and categories.dtype.kind == "U"
    assert categories.tolist() == [_category(i) for i in range(1000, 1000 + N_ITEMS)]
    assert load_als(new).item_categories is not None
    assert fmt.read_item_categories(old) is None and load_als(old).item_categories is None
    assert load_artifact(new).has_categories and not load_artifact(old).has_categories


def test_a_missing_categories_file_named_in_metadata_is_refused(tmp_path: Path) -> None:
    directory = save_als(_with_categories(), artifacts_dir=tmp_path, version="v1")
    fmt.array_path(directory, fmt.ITEM_CATEGORIES).unlink()
    with pytest.raises(fmt.ArtifactFormatError, match="item_categories"):
        fmt.read_checked(directory)


def test_item_category_names_follow_the_ids_and_blank_the_missing() -> None:
    items = pd.DataFrame({"item_id": [3, 1, 2], "category": ["x", None, "z"]})
    assert item_category_names(items, np.array([1, 2, 3, 9])).tolist() == ["", "z", "x", ""]


@pytest.mark.parametrize("user", [100, 10**9], ids=["known", "unknown"])
def test_the_filter_is_applied_before_the_top_k(tmp_path: Path, user: int) -> None:
    scorer = load_artifact(save_als(_with_categories(), artifacts_dir=tmp_path, version="v1"))
    plain, _ = scorer.recommend_one(user, k=N_ITEMS)
    items, scores = scorer.recommend_one(user, k=5, include_categories=["b"])
    assert len(items) == 5 and {_category(i) for i in items} == {"b"}
    assert items == [i for i in plain if _category(i) == "b"][:5]  # the best 5 allowed ones
    assert scores == sorted(scores, reverse=True)
    items, _ = scorer.recommend_one(user, k=5, exclude_categories=["a", "b"])
    assert len(items) == 5 and {_category(i) for i in items} <= {"c", "d"}
    items, _ = scorer.recommend_one(
        user, k=5, include_categories=["a", "b"], exclude_categories=["a"]
    )
    assert {_category(i) for i in items} == {"b"}


def test_fewer_only_when_the_allowed_items_run_out(tmp_path: Path) -> None:
    scorer = load_artifact(save_als(_with_categories(), artifacts_dir=tmp_path, version="v1"))
    all_items, _ = scorer.recommend_one(100, k=N_ITEMS)  # every item the user has not seen
    items, _ = scorer.recommend_one(100, k=N_ITEMS, include_categories=["c"])
    assert sorted(items) == sorted(i for i in all_items if _category(i) == "c")
    assert scorer.recommend_one(100, k=5, include_categories=["nope"]) == ([], [])


def test_an_artifact_without_categories_refuses_a_filter(tmp_path: Path) -> None:
    scorer = load_artifact(save_als(tiny_model(), artifacts_dir=tmp_path, version="v1"))
    with pytest.raises(CategoriesUnavailable):
        scorer.recommend_one(100, k=5, include_categories=["a"])
    assert len(scorer.recommend_one(100, k=5)[0]) == 5


def _client(tmp_path: Path, model) -> AppClient:
    save_als(model, artifacts_dir=tmp_path, version="v1")
    settings = MfSettings(artifacts_dir=fmt.als_root(tmp_path), reload_interval_s=0)
    return AppClient(create_app(settings))


def test_the_api_filters_and_validates(tmp_path: Path) -> None:
    with _client(tmp_path, _with_categories()) as client:
        r = client.get(
            "/v1/recommendations/100",
            params={"k": 5, "include_categories": ["a", "b"], "exclude_categories": "b"},
        )
        assert r.status_code == 200, r.text
        assert {_category(i["item_id"]) for i in r.json()["items"]} == {"a"}
        assert len(r.json()["items"]) == 5
        bad = [
            {"include_categories": [f"c{i}" for i in range(MAX_FILTER_CATEGORIES + 1)]},
            {"include_categories": "a,b"},
            {"exclude_categories": ""},
            {"exclude_categories": "x" * (MAX_CATEGORY_LENGTH + 1)},
            {"include_categories": "tab\there"},
            {"include_categories": "line\n"},
        ]
        for params in bad:
            r = client.get("/v1/recommendations/100", params=params)
            assert r.status_code == 422, (params, r.text)
            assert r.json()["code"] == "invalid_request"


def test_the_api_answers_409_for_an_artifact_without_categories(tmp_path: Path) -> None:
    with _client(tmp_path, tiny_model()) as client:
        r = client.get("/v1/recommendations/100", params={"include_categories": "a"})
        assert r.status_code == 409
        assert r.json()["code"] == "categories_unavailable"
        assert client.get("/v1/recommendations/100").status_code == 200
