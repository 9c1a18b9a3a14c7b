"""The contract every recommender tier passes (two_tower, als, popular, the gateway's tiers).

Rules (see ``cascade.recommenders``): ``recommend(user_ids, k=..., exclude=...)`` returns
``(item_ids int64 (n, k), scores float32 (n, k))``; each row holds k unique, known items the user
did not see in training and that are not in ``exclude``, sorted by score descending; fewer than
k (padded with item -1 / score -inf) only when the catalogue has fewer unseen items; a user the
model never saw gets the most popular items.

How to apply it to a tier: subclass :class:`RecommenderContract` in a test module and provide
two fixtures. Train the model on :func:`contract_interactions` (it has a user who saw all but
three items, and clear popularity), or on your own frame::

    from tests.contract import RecommenderContract, contract_interactions

    class TestMyTier(RecommenderContract):
        @pytest.fixture(scope="class")
        @classmethod
        def train_interactions(cls):
            return contract_interactions()

        @pytest.fixture(scope="class")
        @classmethod
        def recommender(cls, train_interactions):
            return train_my_model(train_interactions)   # anything with .recommend(...)

Override ``catalogue`` when the model knows items that have no training interaction, and
``popular_items`` when its notion of popularity differs from interaction counts.
A tier served over HTTP can pass an adapter whose ``recommend`` calls the service.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cascade.runtime.schema import ITEM_ID, RATING, TIMESTAMP, USER_ID

UNKNOWN_USER = 10**12  # never in any test data set
K = 5


def contract_interactions(
    *, n_users: int = 40, n_items: int = 30, per_user: int = 8, seed: int = 0
) -> pd.DataFrame:
    """A small frame every tier can train on.

    Items are drawn with a popularity skew, so the unknown-user ranking is clear; user 0 (the
    "greedy" user) saw every item except the last three item ids.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1)
    weights /= weights.sum()
    users, items = [], []
    for u in range(1, n_users):
        chosen = rng.choice(n_items, size=per_user, replace=False, p=weights)
        users += [u] * per_user
        items += chosen.tolist()
    # user 0 saw all but the last three items; user 1 makes sure those three exist
    users += [0] * (n_items - 3)
    items += list(range(n_items - 3))
    extra = [i for i in range(n_items - 3, n_items) if i not in items[:per_user]]
    users += [1] * len(extra)
    items += extra
    n = len(users)
    return pd.DataFrame(
        {
            USER_ID: np.asarray(users, dtype=np.int64),
            ITEM_ID: np.asarray(items, dtype=np.int64) + 100,  # ids are not row indices
            TIMESTAMP: pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(np.arange(n), unit="min"),
            RATING: np.ones(n, dtype=np.float32),
        }
    )


class RecommenderContract:
    """Mixin: subclass it with ``recommender`` and ``train_interactions`` fixtures."""

    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls):  # pragma: no cover - provided by the subclass
        raise NotImplementedError("provide a `recommender` fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls) -> pd.DataFrame:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("provide a `train_interactions` fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def catalogue(cls, train_interactions: pd.DataFrame) -> np.ndarray:
        """Item ids the model may recommend (default: every item in the training data)."""
        return np.unique(train_interactions[ITEM_ID].to_numpy(np.int64))

    @pytest.fixture(scope="class")
    @classmethod
    def popular_items(cls, train_interactions: pd.DataFrame) -> pd.Series:
        """Interaction count per item id: what "popular" means for the unknown-user check."""
        return train_interactions[ITEM_ID].value_counts()

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def seen_of(train_interactions: pd.DataFrame, user: int) -> set[int]:
        rows = train_interactions[USER_ID] == user
        return set(train_interactions.loc[rows, ITEM_ID].astype(int))

    @staticmethod
    def users_of(train_interactions: pd.DataFrame) -> np.ndarray:
        return np.unique(train_interactions[USER_ID].to_numpy(np.int64))

    @staticmethod
    def check_shapes(items: np.ndarray, scores: np.ndarray, n: int, k: int) -> None:
        assert items.shape == (n, k) and scores.shape == (n, k)
        assert items.dtype == np.int64, items.dtype
        assert scores.dtype == np.float32, scores.dtype

    def check_row(self, items, scores, *, k, forbidden: set[int], catalogue: np.ndarray) -> None:
        valid = items >= 0
        # padding only at the end, with -inf scores
        assert not np.any(valid[np.argmin(valid) :]) or valid.all(), (
            f"padding not at the end: {items}"
        )
        assert np.all(np.isneginf(scores[~valid])), scores
        got = items[valid]
        assert len(set(got.tolist())) == len(got), f"duplicate items: {got}"
        assert np.isin(got, catalogue).all(), f"unknown item ids: {got[~np.isin(got, catalogue)]}"
        assert not (set(got.tolist()) & forbidden), (
            f"seen/excluded items: {set(got.tolist()) & forbidden}"
        )
        assert np.all(np.isfinite(scores[valid]))
        assert np.all(np.diff(scores[valid]) <= 0), f"scores not descending: {scores}"
        available = len(set(catalogue.tolist()) - forbidden)
        assert len(got) == min(k, available), f"{len(got)} items, expected {min(k, available)}"

    # -- the contract ----------------------------------------------------------------------

    def test_known_users_get_k_unseen_known_items_sorted(
        self, recommender, train_interactions, catalogue
    ):
        users = self.users_of(train_interactions)
        items, scores = recommender.recommend(users, k=K)
        self.check_shapes(np.asarray(items), np.asarray(scores), len(users), K)
        for row, user in enumerate(users):
            seen = self.seen_of(train_interactions, int(user))
            self.check_row(items[row], scores[row], k=K, forbidden=seen, catalogue=catalogue)

    def test_exclude_is_respected(self, recommender, train_interactions, catalogue):
        users = self.users_of(train_interactions)[:6]
        first, _ = recommender.recommend(users, k=K)
        exclude = [np.asarray(row[:3][row[:3] >= 0], dtype=np.int64) for row in first]
        items, scores = recommender.recommend(users, k=K, exclude=exclude)
        self.check_shapes(np.asarray(items), np.asarray(scores), len(users), K)
        for row, user in enumerate(users):
            forbidden = self.seen_of(train_interactions, int(user)) | set(exclude[row].tolist())
            self.check_row(items[row], scores[row], k=K, forbidden=forbidden, catalogue=catalogue)

    def test_fewer_than_k_only_when_catalogue_runs_out(
        self, recommender, train_interactions, catalogue
    ):
        counts = train_interactions.groupby(USER_ID)[ITEM_ID].nunique()
        greedy = int(counts.idxmax())
        seen = self.seen_of(train_interactions, greedy)
        available = len(set(catalogue.tolist()) - seen)
        k = available + 4  # more than the catalogue can give this user
        items, scores = recommender.recommend(np.array([greedy]), k=k)
        self.check_shapes(np.asarray(items), np.asarray(scores), 1, k)
        self.check_row(items[0], scores[0], k=k, forbidden=seen, catalogue=catalogue)
        assert (items[0] >= 0).sum() == available
        assert np.all(items[0][available:] == -1)

    def test_unknown_user_gets_popular_items(self, recommender, catalogue, popular_items):
        items, scores = recommender.recommend(np.array([UNKNOWN_USER]), k=K)
        self.check_shapes(np.asarray(items), np.asarray(scores), 1, K)
        self.check_row(items[0], scores[0], k=K, forbidden=set(), catalogue=catalogue)
        # every returned item is at least as popular as every item left out (ties allowed)
        chosen = popular_items.reindex(items[0]).fillna(0)
        rest = popular_items.drop(index=items[0], errors="ignore")
        assert chosen.min() >= (rest.max() if len(rest) else 0)

    def test_unknown_user_respects_exclude(self, recommender, catalogue):
        first, _ = recommender.recommend(np.array([UNKNOWN_USER]), k=K)
        exclude = [first[0][:2]]
        items, scores = recommender.recommend(np.array([UNKNOWN_USER]), k=K, exclude=exclude)
        self.check_row(
            items[0], scores[0], k=K, forbidden=set(exclude[0].tolist()), catalogue=catalogue
        )

    def test_mixed_batch_matches_single_calls(self, recommender, train_interactions):
        users = np.concatenate([self.users_of(train_interactions)[:3], [UNKNOWN_USER]])
        batch, _ = recommender.recommend(users, k=K)
        for row, user in enumerate(users):
            single, _ = recommender.recommend(np.array([user]), k=K)
            assert set(single[0].tolist()) == set(batch[row].tolist())


# -- the category filter -------------------------------------------------------------------------


def contract_category(item_id: int) -> str:
    """The category of an item of :func:`contract_interactions` (ids 100..129): three groups."""
    return f"g{int(item_id) % 3}"


class CategoryFilterContract:
    """Mixin for tiers with a category filter (``include_categories`` / ``exclude_categories``).

    Fixtures: ``filtered`` (an adapter whose ``recommend(user_ids, *, k, exclude=None,
    include_categories=(), exclude_categories=())`` answers like the contract's), the
    ``train_interactions`` and ``catalogue`` of :class:`RecommenderContract`, and
    ``item_category`` (item id -> category name). The rules: every item inside the filter; k
    items whenever the allowed catalogue has k unseen ones (the filter is applied inside the
    top-k, not by dropping from an unfiltered top-k); fewer only when it runs out.
    """

    @pytest.fixture(scope="class")
    @classmethod
    def filtered(cls):  # pragma: no cover - provided by the subclass
        raise NotImplementedError("provide a `filtered` fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def item_category(cls, catalogue: np.ndarray) -> dict[int, str]:
        return {int(i): contract_category(int(i)) for i in catalogue}

    @staticmethod
    def _seen(train_interactions: pd.DataFrame, user: int) -> set[int]:
        return RecommenderContract.seen_of(train_interactions, user)

    def _users(self, train_interactions: pd.DataFrame, allowed: set[int]) -> list[int]:
        """Up to four users with at least K + 2 unseen allowed items (the greedy user of
        :func:`contract_interactions` has too few)."""
        users = []
        for u in np.unique(train_interactions[USER_ID].to_numpy(np.int64)):
            if len(allowed - self._seen(train_interactions, int(u))) >= K + 2:
                users.append(int(u))
            if len(users) == 4:
                break
        assert users, "no user has enough allowed items for this check"
        return users

    def _allowed(self, catalogue, item_category, include=(), exclude=()) -> set[int]:
        return {
            int(i)
            for i in catalogue
            if (not include or item_category.get(int(i), "") in include)
            and item_category.get(int(i), "") not in exclude
        }

    def _check(self, items, scores, *, k, allowed: set[int], forbidden: set[int]) -> None:
        valid = items >= 0
        got = items[valid].tolist()
        assert set(got) <= allowed, f"items outside the filter: {set(got) - allowed}"
        assert not set(got) & forbidden, f"seen/excluded items: {set(got) & forbidden}"
        assert len(set(got)) == len(got)
        assert np.all(np.diff(scores[valid]) <= 0)
        assert len(got) == min(k, len(allowed - forbidden)), (
            f"{len(got)} items, expected {min(k, len(allowed - forbidden))}"
        )

    def test_include_gives_k_items_of_the_allowed_categories(
        self, filtered, train_interactions, catalogue, item_category
    ):
        names = sorted(set(item_category.values()) - {""})
        include = names[:1]
        allowed = self._allowed(catalogue, item_category, include=include)
        for user in self._users(train_interactions, allowed):
            seen = self._seen(train_interactions, user)
            items, scores = filtered.recommend(np.array([user]), k=K, include_categories=include)
            self._check(items[0], scores[0], k=K, allowed=allowed, forbidden=seen)

    def test_exclude_categories_and_exclude_items_together(
        self, filtered, train_interactions, catalogue, item_category
    ):
        names = sorted(set(item_category.values()) - {""})
        excluded = names[:1]
        allowed = self._allowed(catalogue, item_category, exclude=excluded)
        user = self._users(train_interactions, allowed)[0]
        first, _ = filtered.recommend(np.array([user]), k=K, exclude_categories=excluded)
        drop = [int(i) for i in first[0][:2] if i >= 0]
        items, scores = filtered.recommend(
            np.array([user]), k=K, exclude=[np.asarray(drop, np.int64)], exclude_categories=excluded
        )
        forbidden = self._seen(train_interactions, user) | set(drop)
        self._check(items[0], scores[0], k=K, allowed=allowed, forbidden=forbidden)

    def test_fewer_than_k_only_when_the_allowed_catalogue_runs_out(
        self, filtered, train_interactions, catalogue, item_category
    ):
        names = sorted(set(item_category.values()) - {""})
        include = names[:1]
        allowed = self._allowed(catalogue, item_category, include=include)
        user = self._users(train_interactions, allowed)[0]
        seen = self._seen(train_interactions, user)
        left = sorted(allowed - seen)
        keep = 2  # exclude all but two allowed unseen items: exactly those two come back
        assert len(left) > keep
        exclude = np.asarray(left[keep:], np.int64)
        items, scores = filtered.recommend(
            np.array([user]), k=K, exclude=[exclude], include_categories=include
        )
        forbidden = seen | set(exclude.tolist())
        self._check(items[0], scores[0], k=K, allowed=allowed, forbidden=forbidden)
        assert sorted(items[0][:keep].tolist()) == left[:keep]
        assert np.all(items[0][keep:] == -1)

    def test_an_include_filter_of_unknown_categories_gives_nothing(
        self, filtered, train_interactions, catalogue
    ):
        user = self._users(train_interactions, {int(i) for i in catalogue})[0]
        items, _ = filtered.recommend(np.array([user]), k=K, include_categories=["no-such"])
        assert np.all(items[0] == -1)
