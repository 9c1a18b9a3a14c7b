"""The recommender contract (``tests/contract.py``) applied to each tier the gateway serves, over
HTTP against the real stack (see conftest.py): two_tower (healthy), als (Triton frozen, breaker
open), popular (Triton frozen and the MF service down). Every answer's ``served_by`` is checked,
so each class really exercises its tier. Each tier also passes the category filter's contract
(``CategoryFilterContract``: k items of the allowed categories whenever enough exist, fewer only
when they run out), with the data set's own item categories."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.contract import UNKNOWN_USER, CategoryFilterContract, K, RecommenderContract
from tests.integration.conftest import DATASET, GatewayStack

pytestmark = pytest.mark.integration

MAX_EXCLUDE = 500  # GatewaySettings.max_exclude (default) of the stack
BATCH_MAX_USERS = 100  # GatewaySettings.batch_max_users (default)


class GatewayTier:
    """Adapter: ``recommend`` asks the gateway (POST) one user at a time, pads like the contract."""

    def __init__(self, http: httpx.Client, tier: str) -> None:
        self.http = http
        self.tier = tier
        self.name = f"gateway-{tier}"

    def recommend(self, user_ids, *, k, exclude=None, include_categories=(), exclude_categories=()):
        filters = {"include_categories": list(include_categories)} if include_categories else {}
        if exclude_categories:
            filters["exclude_categories"] = list(exclude_categories)
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
                    "/v1/recommendations",
                    json={"user_id": int(user), "k": k, "exclude": skip, **filters},
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


class BatchGatewayTier:
    """Adapter: ``recommend`` asks ``POST /v1/recommendations:batch`` for all the users at once
    (the real Feast batch read and one multi-row Triton request), pads like the contract."""

    def __init__(self, http: httpx.Client, tier: str) -> None:
        self.http = http
        self.tier = tier
        self.name = f"gateway-batch-{tier}"

    def recommend(self, user_ids, *, k, exclude=None, include_categories=(), exclude_categories=()):
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        entries = []
        for row, user in enumerate(users):
            entry: dict = {"user_id": int(user), "k": k}
            if exclude is not None:
                entry["exclude"] = [int(i) for i in exclude[row]]
            if include_categories:
                entry["include_categories"] = list(include_categories)
            if exclude_categories:
                entry["exclude_categories"] = list(exclude_categories)
            entries.append(entry)
        expected = ["popular" if int(u) == UNKNOWN_USER else self.tier for u in users]
        results = []
        for start in range(0, len(entries), BATCH_MAX_USERS):  # the route's limit per call
            chunk = entries[start : start + BATCH_MAX_USERS]
            want = expected[start : start + BATCH_MAX_USERS]
            for _ in range(3):  # a rare slow call on this loaded machine falls back: ask again
                r = self.http.post("/v1/recommendations:batch", json={"users": chunk})
                assert r.status_code == 200, r.text
                got = r.json()["results"]
                if [res["served_by"] for res in got] == want:
                    break
            assert [res["served_by"] for res in got] == want, got
            results += got
        items = np.full((len(users), k), -1, dtype=np.int64)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        for row, res in enumerate(results):
            assert res["user_id"] == int(users[row])
            n = len(res["items"])
            items[row, :n] = [i["item_id"] for i in res["items"]]
            scores[row, :n] = [i["score"] for i in res["items"]]
        return items, scores


class _GatewayContract(RecommenderContract, CategoryFilterContract):
    tier = ""

    @pytest.fixture(scope="class")
    @classmethod
    def filtered(cls, recommender):
        return recommender

    @pytest.fixture(scope="class")
    @classmethod
    def item_category(cls, gateway_stack: GatewayStack) -> dict[int, str]:
        path = gateway_stack.layout.dataset_dir(DATASET) / "items.parquet"
        items = pd.read_parquet(path, columns=["item_id", "category"])
        return {
            int(i): str(c or "") for i, c in zip(items["item_id"], items["category"], strict=True)
        }

    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls, gateway_stack: GatewayStack) -> pd.DataFrame:
        path = gateway_stack.layout.dataset_dir(DATASET) / "interactions.parquet"
        return pd.read_parquet(path)

    def test_fewer_than_k_only_when_catalogue_runs_out(
        self, recommender, train_interactions, catalogue
    ):
        """Through the API k stays <= max_k, so an ``exclude`` list runs the catalogue out:
        it leaves a known user 3 unseen items, and the tier must answer exactly those 3."""
        user = int(self.users_of(train_interactions)[0])
        seen = self.seen_of(train_interactions, user)
        unseen = sorted(set(catalogue.tolist()) - seen)
        left = 3
        exclude = np.asarray(unseen[left:], dtype=np.int64)
        assert left < K and len(exclude) <= MAX_EXCLUDE, "the tiny catalogue outgrew the test"
        items, scores = recommender.recommend(np.array([user]), k=K, exclude=[exclude])
        self.check_shapes(np.asarray(items), np.asarray(scores), 1, K)
        forbidden = seen | set(exclude.tolist())
        self.check_row(items[0], scores[0], k=K, forbidden=forbidden, catalogue=catalogue)
        assert sorted(items[0][:left].tolist()) == unseen[:left]
        assert np.all(items[0][left:] == -1)

    # test_mixed_batch_matches_single_calls runs as inherited: the adapter asks one request per
    # user of the batch, so it checks each user's answer against a request of its own.


class TestTwoTowerTierContract(_GatewayContract):
    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, gateway_stack: GatewayStack):
        gateway_stack.heal()
        with httpx.Client(base_url=gateway_stack.url, timeout=5) as http:
            yield GatewayTier(http, "two_tower")


class TestTwoTowerBatchContract(_GatewayContract):
    """The same contract through the batch route: every user of a check in one request."""

    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, gateway_stack: GatewayStack):
        gateway_stack.heal()
        with httpx.Client(base_url=gateway_stack.url, timeout=5) as http:
            yield BatchGatewayTier(http, "two_tower")


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
