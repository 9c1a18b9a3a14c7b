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
