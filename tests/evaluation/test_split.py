"""Temporal per-user split rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cascade.evaluation.split import n_test_interactions, temporal_split


def _frame(rows):
    users, items, days = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "user_id": np.asarray(users, np.int64),
            "item_id": np.asarray(items, np.int64),
            "timestamp": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(days, unit="D"),
            "rating": np.ones(len(rows), np.float32),
        }
    )


def test_last_fraction_by_time_goes_to_test():
    # user 1: 10 interactions, given out of time order; the two latest go to test
    rows = [(1, 100 + d, d) for d in (5, 2, 9, 0, 7, 1, 8, 3, 6, 4)]
    train, test = temporal_split(_frame(rows))
    assert test["item_id"].tolist() == [108, 109]
    assert sorted(train["item_id"]) == list(range(100, 108))
    assert train["timestamp"].max() <= test["timestamp"].min()


def test_users_below_min_interactions_stay_in_train():
    rows = [(1, i, i) for i in range(4)] + [(2, i, i) for i in range(5)]
    train, test = temporal_split(_frame(rows), min_interactions=5)
    assert set(test["user_id"]) == {2}
    assert len(test) == 1 and test["item_id"].tolist() == [4]
    assert (train["user_id"] == 1).sum() == 4


@pytest.mark.parametrize(("n", "expected"), [(5, 1), (9, 1), (10, 2), (14, 2), (15, 3), (100, 20)])
def test_test_size_is_floor_with_at_least_one(n, expected):
    assert int(n_test_interactions(n, 0.2)) == expected


def test_ties_break_on_item_id_and_result_is_deterministic():
    rows = [(1, item, 0) for item in (9, 3, 7, 1, 5)]  # all at the same moment
    frame = _frame(rows)
    train, test = temporal_split(frame)
    assert test["item_id"].tolist() == [9]  # highest item id is "latest"
    shuffled = frame.sample(frac=1.0, random_state=3)
    train2, test2 = temporal_split(shuffled)
    pd.testing.assert_frame_equal(train, train2)
    pd.testing.assert_frame_equal(test, test2)


def test_every_row_lands_in_exactly_one_side():
    rng = np.random.default_rng(0)
    rows = [
        (int(u), int(i), int(d))
        for u, i, d in zip(
            rng.integers(0, 30, 400),
            rng.integers(0, 50, 400),
            rng.integers(0, 60, 400),
            strict=True,
        )
    ]
    frame = _frame(rows)
    train, test = temporal_split(frame, test_fraction=0.3, min_interactions=6)
    assert len(train) + len(test) == len(frame)
    for user, group in test.groupby("user_id"):
        user_train = train[train["user_id"] == user]
        assert len(group) == max(1, int(np.floor(0.3 * (len(group) + len(user_train)) + 1e-9)))
        assert user_train["timestamp"].max() <= group["timestamp"].min()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"min_interactions": 1}, "min_interactions"),
    ],
)
def test_bad_parameters(kw, message):
    with pytest.raises(ValueError, match=message):
        temporal_split(_frame([(1, 1, 1)]), **kw)


def test_missing_column():
    with pytest.raises(ValueError, match="timestamp"):
        temporal_split(pd.DataFrame({"user_id": [1], "item_id": [2]}))
