"""The recommender contract (``tests/contract.py``) applied to each tier the gateway serves, over
HTTP against the real stack (see conftest.py): two_tower (healthy), als (Triton frozen, breaker
open), popular (Triton frozen and the MF service down). Every answer's ``served_by`` is checked,
so each class really exercises its tier."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.contract import UNKNOWN_USER, RecommenderContract
from tests.integration.conftest import DATASET, GatewayStack

pytestmark = pytest.mark.integration


class GatewayTier:
    """Adapter: ``recommend`` asks the gateway (POST) one user at a time, pads like the contract."""

    def __init__(self, http: httpx.Client, tier: str) -> None:
        self.http = http
        self.tier = tier
        self.name = f"gateway-{tier}"

    def recommend(self, user_ids, *, k, exclude=None):
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        items = np.full((len(users), k), -1, dtype=np.int64)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        for row, user in enumerate(users):
            skip = [] if exclude is None else [int(i) for i in exclude[row]]
            # unknown users always get popular (cold_start), whatever tier is up
            expected = "popular" if int(user) == UNKNOWN_USER else self.tier
            for _ in range(
                3
            ):  # a rare slow call on this loaded 2-core machine falls back: ask again
                r = self.http.post(
                    "/v1/recommendations", json={"user_id": int(user), "k": k, "exclude": skip}
                )
                assert r.status_code == 200, r.text
                body = r.json()
                if body["served_by"] == expected:
                    break
            assert body["served_by"] == expected, body
            n = len(body["items"])
            items[row, :n] = [i["item_id"] for i in body["items"]]
            scores[row, :n] = [i["score"] for i in body["items"]]
        return items, scores


class _GatewayContract(RecommenderContract):
    tier = ""

    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls, gateway_stack: GatewayStack) -> pd.DataFrame:
        path = gateway_stack.layout.dataset_dir(DATASET) / "interactions.parquet"
        return pd.read_parquet(path)

    def test_fewer_than_k_only_when_catalogue_runs_out(self):
        pytest.skip(
            "needs k above the gateway's max_k (100) on this data; covered for the popular tier in tests/gateway"
        )

    def test_mixed_batch_matches_single_calls(self):
        pytest.skip("the gateway API serves one user per request")


class TestTwoTowerTierContract(_GatewayContract):
    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, gateway_stack: GatewayStack):
        gateway_stack.heal()
        with httpx.Client(base_url=gateway_stack.url, timeout=5) as http:
            yield GatewayTier(http, "two_tower")


class TestAlsTierContract(_GatewayContract):
    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, gateway_stack: GatewayStack):
        gateway_stack.heal()
        with httpx.Client(base_url=gateway_stack.url, timeout=5) as http:
            gateway_stack.procs["triton"].pause()
            try:
                user = int(gateway_stack.users()[0])
                for _ in range(12):  # open the breaker so that every answer comes from ALS
                    http.get(f"/v1/recommendations/{user}")
                yield GatewayTier(http, "als")
            finally:
                gateway_stack.procs["triton"].resume()


class TestPopularTierContract(_GatewayContract):
    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, gateway_stack: GatewayStack):
        gateway_stack.heal()
        with httpx.Client(base_url=gateway_stack.url, timeout=5) as http:
            gateway_stack.procs["triton"].pause()
            gateway_stack.procs["mf"].kill()
            try:
                yield GatewayTier(http, "popular")
            finally:
                gateway_stack.procs["triton"].resume()
