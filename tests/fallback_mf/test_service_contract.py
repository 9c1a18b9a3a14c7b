"""The recommender contract (``tests/contract.py``) applied to the MF service's HTTP answers, the
category filter's contract included (``include_categories`` / ``exclude_categories``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fallback_mf.schemas import RecommendationResponse
from fallback_mf.service.main import create_app
from fallback_mf.service.settings import MfSettings
from fallback_mf.train import train_als
from tests.contract import (
    CategoryFilterContract,
    RecommenderContract,
    contract_category,
    contract_interactions,
)
from tests.fallback_mf.service_helpers import AppClient, scorer_of


class HttpRecommender:
    """Adapter: ``recommend`` asks the service one user at a time and pads like the contract."""

    name = "als-http"

    def __init__(self, client: AppClient) -> None:
        self.client = client

    def recommend(self, user_ids, *, k, exclude=None, include_categories=(), exclude_categories=()):
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        items = np.full((len(users), k), -1, dtype=np.int64)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        for row, user in enumerate(users):
            params: dict[str, object] = {"k": k}
            if exclude is not None and len(exclude[row]):
                params["exclude"] = ",".join(str(int(i)) for i in exclude[row])
            if include_categories:
                params["include_categories"] = list(include_categories)
            if exclude_categories:
                params["exclude_categories"] = list(exclude_categories)
            r = self.client.get(f"/v1/recommendations/{int(user)}", params=params)
            assert r.status_code == 200, r.text
            body = RecommendationResponse.model_validate(r.json())
            n = len(body.items)
            items[row, :n] = [i.item_id for i in body.items]
            scores[row, :n] = [i.score for i in body.items]
        return items, scores


class TestServiceContract(RecommenderContract, CategoryFilterContract):
    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls) -> pd.DataFrame:
        return contract_interactions(seed=2)

    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, train_interactions, tmp_path_factory):
        model = train_als(
            interactions=train_interactions, factors=8, iterations=5, threads=1, progress=False
        )
        model.item_categories = np.asarray([contract_category(i) for i in model.item_ids], str)
        root = tmp_path_factory.mktemp("als")
        (root / "v1").mkdir()
        (root / "latest").write_text("v1\n")

        def loader(directory: Path):
            return scorer_of(model)

        settings = MfSettings(artifacts_dir=root, reload_interval_s=0)
        with AppClient(create_app(settings, loader=loader)) as client:
            yield HttpRecommender(client)

    @pytest.fixture(scope="class")
    @classmethod
    def filtered(cls, recommender):
        return recommender

    def test_unknown_user_gets_popular_items_of_the_allowed_categories(
        self, recommender, catalogue, popular_items
    ):
        from tests.contract import UNKNOWN_USER

        items, _ = recommender.recommend(np.array([UNKNOWN_USER]), k=5, include_categories=["g1"])
        assert len(items[0]) == 5 and all(contract_category(i) == "g1" for i in items[0])
        allowed = popular_items[[contract_category(i) == "g1" for i in popular_items.index]]
        chosen = allowed.reindex(items[0]).fillna(0)
        assert chosen.min() >= allowed.drop(index=items[0], errors="ignore").max()
