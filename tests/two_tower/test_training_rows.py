"""The Two-Tower's training rows: event-time history, Feast's join for profile and item features,
lists materialised per batch, and the warning for a training set of mostly empty histories."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cascade.data import features as data_features
from cascade.data import history as data_history
from cascade.data.history import EventHistory
from cascade.runtime.paths import Layout
from cascade.runtime.schema import MAX_SEEN_ITEMS, RECENT_ITEMS_LEN
from tests.contract import contract_interactions
from two_tower import contract, towers
from two_tower.data import HistoryLists
from two_tower.prepare import prepare
from two_tower.training_frames import (
    EMPTY_HISTORY_WARN_SHARE,
    empty_history_warning,
    frame_from_interactions,
    report_empty_history,
)


def test_the_data_rules_are_the_towers() -> None:
    """Item rows are written on a change of the buckets the item tower computes, and lists are
    padded as the contract pads them."""
    assert data_features.POPULARITY_BUCKETS == towers.COUNT_BUCKETS
    assert data_features.AGE_DAYS_BUCKETS == towers.AGE_DAYS_BUCKETS
    assert data_history.PAD == contract.PAD_ITEM
    counts = np.arange(0, 2**21 - 2, dtype=np.int64)
    np.testing.assert_array_equal(
        data_features.log2_bucket(counts, towers.COUNT_BUCKETS),
        towers.log2_bucket(torch.from_numpy(counts), towers.COUNT_BUCKETS).numpy(),
    )
    # ages as the feature tables store them (float32 days), boundaries (2**k - 1 days) included
    ages = np.r_[np.linspace(0, 40_000, 200_001), 2.0 ** np.arange(17) - 1, -3.0].astype(np.float32)
    np.testing.assert_array_equal(
        data_features.log2_bucket(ages, towers.AGE_DAYS_BUCKETS),
        towers.log2_bucket(torch.from_numpy(ages), towers.AGE_DAYS_BUCKETS).numpy(),
    )


def _prepared(interactions: pd.DataFrame, seen_len: int = 5):
    rows = frame_from_interactions(interactions)
    empty = interactions.iloc[0:0]
    users = pd.DataFrame({"user_id": np.unique(interactions.user_id), "age_bucket": 1})
    users["country"] = "US"
    items = pd.DataFrame({"item_id": np.unique(interactions.item_id), "price_bucket": 0})
    items["category"], items["release_date"] = "c", interactions.timestamp.min()
    return rows, prepare(
        frame=rows.frame,
        history=rows.history,
        fit=interactions,
        users=users,
        items=items,
        val_fit=empty,
        val_target=empty,
        seen_len=seen_len,
    )


def test_training_set_lists_are_materialised_per_batch() -> None:
    interactions = contract_interactions()
    rows, prepared = _prepared(interactions, seen_len=5)
    users = prepared.training.users
    assert isinstance(users.recent_items, HistoryLists)
    assert users.recent_items.shape == (len(interactions), RECENT_ITEMS_LEN)
    assert users.seen_items.shape == (len(interactions), 5)
    batch = np.array([3, 0, len(interactions) - 1])
    taken = users.take(batch)
    assert isinstance(taken.recent_items, np.ndarray)
    np.testing.assert_array_equal(taken.recent_items, rows.history.recent(batch))
    np.testing.assert_array_equal(taken.seen_items, rows.history.seen(batch, 5))
    np.testing.assert_array_equal(taken.interaction_count, rows.history.counts(batch))
    assert prepared.empty_history_share == pytest.approx(rows.history.empty_share())
    # the in-memory popularity is the count of the item's earlier interactions
    frame = rows.frame
    for r in (0, 7, len(frame) - 1):
        earlier = (frame.item_id == frame.item_id[r]) & (
            frame.event_timestamp < frame.event_timestamp[r]
        )
        assert frame.popularity[r] == earlier.sum()


def _one_off_users(n_users: int = 300) -> pd.DataFrame:
    """A log where most users interact once (the bad case for the user tower)."""
    rng = np.random.default_rng(0)
    users = np.r_[np.arange(n_users), np.repeat([10_000, 10_001], 20)]
    return pd.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "item_id": rng.integers(0, 30, len(users)).astype(np.int64),
            "timestamp": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(np.arange(len(users)), unit="min"),
        }
    )


def test_mostly_empty_histories_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="two_tower.training_frames")
    share = report_empty_history(EventHistory.from_interactions(_one_off_users()))
    assert share > EMPTY_HISTORY_WARN_SHARE
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "empty user history" in warnings[0].getMessage()
    assert "popularity level" in warnings[0].getMessage()
    caplog.clear()
    share = report_empty_history(EventHistory.from_interactions(contract_interactions()))
    assert share < EMPTY_HISTORY_WARN_SHARE
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "empty user history" in caplog.text  # the share is always logged
    assert empty_history_warning(EMPTY_HISTORY_WARN_SHARE, 10) is None


@pytest.mark.integration
def test_feast_rows_join_profile_and_items_and_take_history_at_event_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Feast (SQLite): profile and item columns from the point-in-time join (item buckets
    equal the exact event-time ones), history from the log; none from activity snapshots."""
    from cascade.data.features import build_feature_tables, log2_bucket, write_feature_tables
    from cascade.data.synthetic import generate
    from two_tower.training_frames import feast_training_rows

    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    monkeypatch.setenv("CASCADE_FEAST_PROJECT", "cascade_rows_test")
    monkeypatch.delenv("REDIS_URL", raising=False)
    layout = Layout(home=tmp_path)
    ds = generate(scale="tiny", seed=7)
    write_feature_tables(build_feature_tables(ds), layout.dataset_dir("tiny"))
    log = ds.interactions.sample(frac=1.0, random_state=0).reset_index(drop=True)
    rows = feast_training_rows(layout=layout, dataset="tiny", interactions=log, engine="asof")
    local = frame_from_interactions(log, users=ds.users, items=ds.items)
    assert "recent_items" not in rows.frame.columns and len(rows) == len(log)
    np.testing.assert_array_equal(rows.frame.user_id, log.user_id)  # the log's row order
    for column in ("age_bucket", "price_bucket"):
        np.testing.assert_array_equal(rows.frame[column].astype(int), local.frame[column])
    assert rows.frame.country.tolist() == local.frame.country.tolist()
    for column, buckets in (
        ("popularity", data_features.POPULARITY_BUCKETS),
        ("age_days", data_features.AGE_DAYS_BUCKETS),
    ):
        np.testing.assert_array_equal(
            log2_bucket(rows.frame[column].to_numpy(np.float64), buckets),
            log2_bucket(local.frame[column].to_numpy(np.float64), buckets),
        )
    every = np.arange(len(log))
    np.testing.assert_array_equal(rows.history.seen(every, 50), local.history.seen(every, 50))
    np.testing.assert_array_equal(rows.history.counts(), local.history.counts())


@pytest.mark.integration
def test_train_command_prints_the_share_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cascade.cli import app

    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    monkeypatch.setenv("CASCADE_FEAST_PROJECT", "cascade_rows_cli_test")
    monkeypatch.delenv("REDIS_URL", raising=False)
    log = _one_off_users()
    log["timestamp"] = (log.timestamp.astype("int64") // 10**9).astype(np.int64)
    path = tmp_path / "one_off.csv"
    log.to_csv(path, index=False)
    args = ["train", "two-tower", "--data", f"csv:{path}", "--full-data", "--epochs", "1"]
    args += ["--dim", "8", "--members", "1", "--batch-size", "32", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "user history at event time" in result.output
    assert re.search(
        r"training rows: [\d,]+, user history at event time, \d+\.\d% with an empty", result.output
    )
    assert "WARNING:" in result.output and "empty user history" in result.output
    assert MAX_SEEN_ITEMS == contract.MAX_SEEN_ITEMS
