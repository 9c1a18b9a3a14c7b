"""Offline feature tables: point-in-time correctness, final snapshot = full history, item rows
written on change, layout."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from cascade.data.dataset import Dataset
from cascade.data.features import (
    AGE_DAYS_BUCKETS,
    POPULARITY_BUCKETS,
    build_feature_tables,
    log2_bucket,
    user_state,
    write_feature_tables,
)
from cascade.data.synthetic import generate
from cascade.runtime.schema import (
    EVENT_TIMESTAMP,
    FEATURES_DIR,
    ITEM_FEATURES_FILE,
    MAX_SEEN_ITEMS,
    RECENT_ITEMS_LEN,
    USER_ACTIVITY_FILE,
    USER_PROFILE_FILE,
)


@pytest.fixture(scope="module")
def tiny():
    return generate(scale="tiny")


@pytest.fixture(scope="module")
def tables(tiny):
    return build_feature_tables(tiny)


def _ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def test_user_state_by_hand():
    inter = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 1],
            "item_id": [10, 11, 10, 12, 13],
            "timestamp": [
                _ts("2024-01-01"),
                _ts("2024-01-03"),
                _ts("2024-01-05"),
                _ts("2024-01-02"),
                _ts("2024-01-04"),
            ],
        }
    )
    st = user_state(inter.iloc[::-1]).set_index("user_id")  # order of rows does not matter
    assert st.interaction_count.to_dict() == {1: 4, 2: 1}
    assert st.interaction_count.dtype == np.int64
    assert list(st.loc[1, "recent_items"]) == [10, 13, 11, 10]  # newest first, repeats kept
    assert list(st.loc[1, "seen_items"]) == [10, 13, 11]  # distinct, newest first
    assert st.loc[1, "recent_items"].dtype == np.int64
    assert list(st.loc[2, "seen_items"]) == [12]


def test_user_state_caps_lists():
    n = MAX_SEEN_ITEMS + 50
    inter = pd.DataFrame(
        {
            "user_id": np.zeros(n, np.int64),
            "item_id": np.arange(n, dtype=np.int64),
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
        }
    )
    st = user_state(inter)
    assert st.interaction_count.iloc[0] == n
    assert list(st.recent_items.iloc[0]) == list(range(n - 1, n - 1 - RECENT_ITEMS_LEN, -1))
    assert len(st.seen_items.iloc[0]) == MAX_SEEN_ITEMS and st.seen_items.iloc[0][0] == n - 1


def test_no_snapshot_uses_an_interaction_at_or_after_its_stamp(tiny, tables):
    act = tables[USER_ACTIVITY_FILE]
    inter = tiny.interactions
    by_user = {
        u: g.sort_values(["timestamp", "item_id"], ascending=False)
        for u, g in inter.groupby("user_id")
    }
    for row in act.sample(300, random_state=0).itertuples():
        hist = by_user[row.user_id]
        before = hist[hist.timestamp < row.event_timestamp]
        assert row.interaction_count == len(before)
        assert set(row.seen_items) <= set(before.item_id)
        assert list(row.recent_items) == list(before.item_id[:RECENT_ITEMS_LEN])
    items = tables[ITEM_FEATURES_FILE]
    for row in items.sample(200, random_state=0).itertuples():
        exact = ((inter.item_id == row.item_id) & (inter.timestamp < row.event_timestamp)).sum()
        assert row.popularity == exact


def test_rows_only_when_state_changed(tiny, tables):
    act = tables[USER_ACTIVITY_FILE].sort_values([EVENT_TIMESTAMP])
    assert not act.duplicated(["user_id", EVENT_TIMESTAMP]).any()
    # Consecutive rows of a user always differ in count (a change means a new interaction).
    diffs = act.groupby("user_id").interaction_count.diff().dropna()
    assert (diffs > 0).all()


def test_final_snapshot_equals_full_history(tiny, tables):
    act = tables[USER_ACTIVITY_FILE]
    last = act[EVENT_TIMESTAMP].max()
    assert last == tiny.interactions.timestamp.max() + timedelta(seconds=1)
    latest = (
        act.sort_values(EVENT_TIMESTAMP)
        .groupby("user_id")
        .tail(1)
        .set_index("user_id")
        .sort_index()
    )
    full = user_state(tiny.interactions).set_index("user_id")
    assert list(latest.index) == list(full.index)
    assert (latest.interaction_count == full.interaction_count).all()
    for a, b in zip(latest.recent_items, full.recent_items, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(latest.seen_items, full.seen_items, strict=True):
        np.testing.assert_array_equal(a, b)
    items = tables[ITEM_FEATURES_FILE]
    final_items = items[items[EVENT_TIMESTAMP] == last].set_index("item_id")
    counts = tiny.interactions.item_id.value_counts()
    assert (final_items.popularity == counts.reindex(final_items.index, fill_value=0)).all()


def test_snapshot_boundaries_and_profiles(tiny, tables):
    stamps = sorted(tables[USER_ACTIVITY_FILE][EVENT_TIMESTAMP].unique())
    gaps = np.diff(stamps[:-1])
    assert (gaps == pd.Timedelta(days=7)).all()  # weekly by default at this size
    prof = tables[USER_PROFILE_FILE]
    assert len(prof) == len(tiny.users)
    assert (prof[EVENT_TIMESTAMP].to_numpy() == tiny.users.signup_date.to_numpy()).all()
    assert str(prof[EVENT_TIMESTAMP].dtype) == "datetime64[us, UTC]"
    items = tables[ITEM_FEATURES_FILE]
    assert (items.age_days >= 0).all()
    assert str(items[EVENT_TIMESTAMP].dtype) == "datetime64[us, UTC]"
    monthly = build_feature_tables(tiny, snapshot_every=timedelta(days=30))
    assert monthly[USER_ACTIVITY_FILE][EVENT_TIMESTAMP].nunique() < len(stamps)


def test_item_rows_do_not_grow_with_snapshot_frequency(tiny, tables):
    """Item rows are written when a value changes, not restated at every snapshot."""
    hourly = build_feature_tables(tiny, snapshot_every=timedelta(hours=1))
    pd.testing.assert_frame_equal(hourly[ITEM_FEATURES_FILE], tables[ITEM_FEATURES_FILE])
    per_item = tables[ITEM_FEATURES_FILE].groupby("item_id").size()
    # release + <= 15 age buckets + <= 24 popularity buckets + the final row
    assert per_item.max() <= 1 + (AGE_DAYS_BUCKETS - 1) + POPULARITY_BUCKETS + 1
    assert len(tables[ITEM_FEATURES_FILE]) < 20 * len(tiny.items)


def test_item_rows_change_only_when_a_bucket_changes(tables):
    items = tables[ITEM_FEATURES_FILE].sort_values(["item_id", EVENT_TIMESTAMP])
    pop = log2_bucket(items.popularity.to_numpy(), POPULARITY_BUCKETS)
    age = log2_bucket(items.age_days.to_numpy(), AGE_DAYS_BUCKETS)
    same_item = items.item_id.to_numpy()[1:] == items.item_id.to_numpy()[:-1]
    changed = (pop[1:] != pop[:-1]) | (age[1:] != age[:-1])
    last = items[EVENT_TIMESTAMP].to_numpy()[1:] == items[EVENT_TIMESTAMP].max()
    assert (changed | last)[same_item].all()  # a row without a bucket change is the final row
    assert (np.diff(items.popularity.to_numpy())[same_item] >= 0).all()


def test_item_features_at_any_moment_have_the_exact_buckets(tiny, tables):
    """The newest item row at or before an interaction gives the item tower the buckets of the
    exact event-time popularity (interactions strictly before) and age."""
    items = tables[ITEM_FEATURES_FILE].sort_values(EVENT_TIMESTAMP)
    inter = tiny.interactions
    release = tiny.items.set_index("item_id").release_date
    events = inter.sample(300, random_state=5)
    # also the instants right at and after a popularity change
    changes = items[items.popularity > 0].sample(100, random_state=6)
    probes = pd.concat(
        [
            events[["item_id", "timestamp"]],
            changes[["item_id", EVENT_TIMESTAMP]].rename(columns={EVENT_TIMESTAMP: "timestamp"}),
            changes[["item_id", EVENT_TIMESTAMP]]
            .rename(columns={EVENT_TIMESTAMP: "timestamp"})
            .assign(timestamp=lambda d: d.timestamp - pd.Timedelta(microseconds=1)),
        ]
    )
    for item, ts in zip(probes.item_id, probes.timestamp, strict=True):
        rows = items[(items.item_id == item) & (items[EVENT_TIMESTAMP] <= ts)]
        if ts < release[item]:
            assert rows.empty
            continue
        row = rows.iloc[-1]
        exact_pop = int(((inter.item_id == item) & (inter.timestamp < ts)).sum())
        exact_age = (ts - release[item]) / pd.Timedelta(days=1)
        assert row.popularity <= exact_pop
        assert (
            log2_bucket(np.array([row.popularity]), POPULARITY_BUCKETS)[0]
            == log2_bucket(np.array([exact_pop]), POPULARITY_BUCKETS)[0]
        ), (item, ts)
        assert (
            log2_bucket(np.array([row.age_days]), AGE_DAYS_BUCKETS)[0]
            == log2_bucket(np.array([exact_age]), AGE_DAYS_BUCKETS)[0]
        ), (item, ts)


def test_written_files_have_list_columns(tmp_path, tiny, tables):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_feature_tables(tables, tmp_path)
    schema = pq.read_schema(tmp_path / FEATURES_DIR / USER_ACTIVITY_FILE)
    assert schema.field("recent_items").type == pa.list_(pa.int64())
    assert schema.field("seen_items").type == pa.list_(pa.int64())
    assert schema.field(EVENT_TIMESTAMP).type == pa.timestamp("us", tz="UTC")
    for name in (USER_PROFILE_FILE, ITEM_FEATURES_FILE):
        assert (tmp_path / FEATURES_DIR / name).is_file()


def test_empty_interactions_are_refused(tiny):
    empty = Dataset("e", tiny.interactions.iloc[:0], tiny.users, tiny.items, "test")
    with pytest.raises(ValueError, match="no interactions"):
        build_feature_tables(empty)


def test_snapshots_with_repeated_pairs(tiny):
    """Real data can repeat a (user, item) pair: seen_items stays distinct at every snapshot."""
    again = tiny.interactions.sample(3000, random_state=1)
    again = again.assign(timestamp=again.timestamp + pd.Timedelta(days=10))
    inter = pd.concat([tiny.interactions, again], ignore_index=True)
    ds = Dataset("rep", inter, tiny.users, tiny.items, "test")
    act = build_feature_tables(ds)[USER_ACTIVITY_FILE]
    for row in act.sample(200, random_state=2).itertuples():
        hist = inter[(inter.user_id == row.user_id) & (inter.timestamp < row.event_timestamp)]
        hist = hist.sort_values(["timestamp", "item_id"], ascending=False)  # history.event_order
        assert row.interaction_count == len(hist)
        assert list(row.seen_items) == list(hist.item_id.drop_duplicates()[:MAX_SEEN_ITEMS])
    latest = act.sort_values(EVENT_TIMESTAMP).groupby("user_id").tail(1).set_index("user_id")
    full = user_state(inter).set_index("user_id")
    for u in full.index[:50]:
        np.testing.assert_array_equal(latest.loc[u, "seen_items"], full.loc[u, "seen_items"])


@pytest.mark.parametrize("item_scale", [1, 2**41])  # 2**41: the key would overflow; ranks instead
def test_item_counts_before_a_stamp(item_scale: int) -> None:
    from cascade.data.features import _counts_before

    rng = np.random.default_rng(0)
    ev_pos = rng.integers(0, 50, 5000) * item_scale
    ev_ts = rng.integers(10**15, 10**15 + 10**6, 5000)
    order = np.lexsort((ev_ts, ev_pos))
    ev_pos, ev_ts = ev_pos[order], ev_ts[order]
    pos = rng.integers(0, 55, 2000) * item_scale
    stamps = np.r_[rng.integers(10**15 - 10, 10**15 + 10**6 + 10, 1990), ev_ts[:10]]
    want = [int(((ev_pos == p) & (ev_ts < s)).sum()) for p, s in zip(pos, stamps, strict=True)]
    assert _counts_before(ev_pos, ev_ts, pos, stamps).tolist() == want
