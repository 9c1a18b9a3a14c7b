"""The recommender contract (``tests/contract.py``) applied to the gateway's popular tier, read from
real ALS artifacts (``train_als`` + ``save_als``, with item categories), the category filter's
contract included. The two_tower and als tiers behind the gateway
are checked over HTTP in ``tests/integration/test_gateway_contract.py``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fallback_mf.artifacts import save_als
from fallback_mf.train import train_als
from gateway.tiers.popular import PopularList
from gateway.tiers.types import CategoryFilter
from tests.contract import (
    CategoryFilterContract,
    RecommenderContract,
    contract_category,
    contract_interactions,
)


class PopularTier:
    """Adapter: the gateway's ``PopularList.recommend`` per user, padded like the contract."""

    name = "gateway-popular"

    def __init__(self, popular: PopularList) -> None:
        self.popular = popular

    def recommend(self, user_ids, *, k, exclude=None, include_categories=(), exclude_categories=()):
        categories = CategoryFilter.of(include_categories, exclude_categories)
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        items = np.full((len(users), k), -1, dtype=np.int64)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        for row, user in enumerate(users):
            skip = [] if exclude is None else [int(i) for i in exclude[row]]
            result = self.popular.recommend(int(user), k=k, exclude=skip, categories=categories)
            n = len(result.item_ids)
            items[row, :n] = result.item_ids
            scores[row, :n] = result.scores
        return items, scores


class TestGatewayPopularContract(RecommenderContract, CategoryFilterContract):
    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls) -> pd.DataFrame:
        return contract_interactions(seed=3)

    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, train_interactions, tmp_path_factory):
        model = train_als(
            interactions=train_interactions, factors=4, iterations=2, threads=1, progress=False
        )
        model.item_categories = np.asarray([contract_category(i) for i in model.item_ids], str)
        artifacts = tmp_path_factory.mktemp("artifacts")
        save_als(model, artifacts_dir=artifacts, version="v1")
        popular = PopularList(artifacts_dir=artifacts)
        assert popular.refresh() and popular.has_categories
        return PopularTier(popular)

    @pytest.fixture(scope="class")
    @classmethod
    def filtered(cls, recommender):
        return recommender


class BatchTier:
    """Adapter: every user of a check in ``POST /v1/recommendations:batch`` calls of the
    in-process gateway (no primary, no MF: each user is served by the popular tier)."""

    name = "gateway-batch-popular"

    def __init__(self, client) -> None:
        self.client = client

    def recommend(self, user_ids, *, k, exclude=None, include_categories=(), exclude_categories=()):
        users = [int(u) for u in np.asarray(user_ids, dtype=np.int64).reshape(-1)]
        entries = [
            {
                "user_id": u,
                "exclude": [] if exclude is None else [int(i) for i in exclude[row]],
                "include_categories": list(include_categories),
                "exclude_categories": list(exclude_categories),
            }
            for row, u in enumerate(users)
        ]
        items = np.full((len(users), k), -1, dtype=np.int64)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        for start in range(0, len(entries), 100):
            r = self.client.post(
                "/v1/recommendations:batch", json={"k": k, "users": entries[start : start + 100]}
            )
            assert r.status_code == 200, r.text
            for row, res in enumerate(r.json()["results"], start=start):
                assert res["served_by"] == "popular" and res["user_id"] == users[row]
                n = len(res["items"])
                items[row, :n] = [i["item_id"] for i in res["items"]]
                scores[row, :n] = [i["score"] for i in res["items"]]
        return items, scores


class TestGatewayBatchContract(RecommenderContract, CategoryFilterContract):
    """The contract through the batch route (the popular tier, from real ALS artifacts)."""

    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls) -> pd.DataFrame:
        return contract_interactions(seed=3)

    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, train_interactions, tmp_path_factory):
        from gateway.components import build_breaker, chain_config
        from gateway.main import create_app
        from gateway.resilience.chain import FallbackChain
        from tests.gateway.appclient import AppClient
        from tests.gateway.test_api import make_settings

        model = train_als(
            interactions=train_interactions, factors=4, iterations=2, threads=1, progress=False
        )
        model.item_categories = np.asarray([contract_category(i) for i in model.item_ids], str)
        artifacts = tmp_path_factory.mktemp("artifacts")
        save_als(model, artifacts_dir=artifacts, version="v1")
        popular = PopularList(artifacts_dir=artifacts)
        assert popular.refresh()

        async def factory(settings, metrics):
            from gateway.components import Components

            chain = FallbackChain(
                config=chain_config(settings),
                popular=popular,
                breaker=build_breaker(settings, metrics),
                metrics=metrics,
            )
            return Components(chain=chain)

        settings = make_settings(triton_url="", mf_url="", features_enabled=False)
        with AppClient(create_app(settings, components=factory)) as client:
            yield BatchTier(client)

    @pytest.fixture(scope="class")
    @classmethod
    def filtered(cls, recommender):
        return recommender
