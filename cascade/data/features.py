"""Offline feature tables: the parquet sources that the Feast feature repo reads.

Every row is a snapshot of an entity's features as of its ``event_timestamp``, computed only from
interactions strictly before that moment, so Feast's point-in-time joins never leak the future.

- ``user_profile``: one row per user, stamped at ``signup_date`` (age_bucket, country).
- ``user_activity``: :func:`user_state` at each snapshot boundary, one row per user whose state
  changed since the previous snapshot, plus a final snapshot stamped just after the last
  interaction (its values are the full history: what materialization puts online). Training
  rows do not join these snapshots: they take the user's history at the exact event time from
  the log (``cascade.data.history``, the same rules as :func:`user_state`).
- ``item_features``: category, price_bucket, popularity (interactions before the row's stamp) and
  age_days, written at release, whenever the log2 bucket of popularity or age changes, and at
  the final stamp (:func:`_item_features`): its size does not grow with the snapshot frequency.

List features (``recent_items``, ``seen_items``) are numpy int64 arrays in an object column:
the same thing ``pd.read_parquet`` returns for a ``list<int64>`` column.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from cascade.data.dataset import Dataset
from cascade.data.history import event_order, timestamps_us
from cascade.runtime.schema import (
    EVENT_TIMESTAMP,
    FEATURES_DIR,
    ITEM_FEATURES_FILE,
    ITEM_ID,
    MAX_SEEN_ITEMS,
    RECENT_ITEMS_LEN,
    TIMESTAMP,
    USER_ACTIVITY_FILE,
    USER_ID,
    USER_PROFILE_FILE,
)

logger = logging.getLogger(__name__)

USER_ACTIVITY_COLUMNS = (USER_ID, "interaction_count", "recent_items", "seen_items")
# Above this many interactions the default snapshot period grows from weekly to 30 days,
# which keeps the activity table of the large scale (20M interactions) a few GB at most.
_LARGE_INTERACTIONS = 5_000_000
_TS_DTYPE = "datetime64[us, UTC]"


def default_snapshot_every(n_interactions: int) -> timedelta:
    """Weekly snapshots for tiny and demo data, every 30 days above 5M interactions."""
    return timedelta(days=30) if n_interactions > _LARGE_INTERACTIONS else timedelta(days=7)


def _sort_newest_first(users: np.ndarray, ts: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Row order grouped by user, newest first: ``history.event_order`` reversed (equal
    timestamps: the larger item id is newer)."""
    order: np.ndarray = event_order(users, ts, items)[::-1]
    return order


def _runs(groups: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in ``groups``."""
    starts: np.ndarray = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    return starts


def _head_per_group(groups: np.ndarray, n: int) -> np.ndarray:
    """Mask keeping the first ``n`` rows of each run of equal values in ``groups``."""
    if len(groups) == 0:
        return np.zeros(0, dtype=bool)
    starts = _runs(groups)
    lengths = np.diff(np.r_[starts, len(groups)])
    pos = np.arange(len(groups)) - np.repeat(starts, lengths)
    mask: np.ndarray = pos < n
    return mask


def _split_runs(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` cut at each run of ``groups``: one int64 array per run, in an object array."""
    offsets = np.r_[_runs(groups), len(groups)].astype(np.int64)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int64)))
    # Arrow builds the per-run numpy views in C++, far faster than np.split at 1M users.
    out: np.ndarray = lists.to_numpy(zero_copy_only=False)
    return out


def _state_sorted(
    users: np.ndarray, items: np.ndarray, repeated: np.ndarray | None = None
) -> pd.DataFrame:
    """:func:`user_state` on rows grouped by user (groups in any order), each group newest first.

    ``repeated`` marks rows whose (user, item) pair occurs more than once in the whole data (the
    only rows that can be dropped as repeats); None means: find out here.
    """
    if len(users) == 0:
        return pd.DataFrame(
            {
                USER_ID: np.zeros(0, np.int64),
                "interaction_count": np.zeros(0, np.int64),
                "recent_items": np.empty(0, dtype=object),
                "seen_items": np.empty(0, dtype=object),
            }
        )
    starts = _runs(users)
    keys = users[starts]
    counts = np.diff(np.r_[starts, len(users)])
    recent = _head_per_group(users, RECENT_ITEMS_LEN)
    # duplicated() keeps the first occurrence, which is the newest one in this order.
    if repeated is None:
        first = ~pd.DataFrame({"u": users, "i": items}).duplicated().to_numpy()
    else:
        first = np.ones(len(users), dtype=bool)
        idx = np.flatnonzero(repeated)
        if len(idx):
            dup = pd.DataFrame({"u": users[idx], "i": items[idx]}).duplicated().to_numpy()
            first[idx[dup]] = False
    su, si = users[first], items[first]
    seen = _head_per_group(su, MAX_SEEN_ITEMS)
    # Every user has at least one row in each subset, so the runs line up with ``keys``.
    out = pd.DataFrame(
        {
            USER_ID: keys.astype(np.int64),
            "interaction_count": counts.astype(np.int64),
            "recent_items": _split_runs(users[recent], items[recent]),
            "seen_items": _split_runs(su[seen], si[seen]),
        }
    )
    if len(keys) > 1 and keys[0] > keys[1]:
        out = out.iloc[::-1].reset_index(drop=True)
    return out


def user_state(interactions: pd.DataFrame) -> pd.DataFrame:
    """Each user's activity features from ``interactions`` (any order).

    Columns: user_id, interaction_count (int64), recent_items (the last RECENT_ITEMS_LEN item ids,
    newest first, repeats kept), seen_items (distinct item ids, newest first, at most
    MAX_SEEN_ITEMS, each at its newest occurrence). One row per user present, sorted by user_id.
    Events are ordered as ``cascade.data.history.event_order`` orders them (equal timestamps: the
    larger item id is newer). This is the one definition of a user's activity, used for the
    feature snapshots (what the online store holds) and by evaluation (the state at the end of
    the train split); ``cascade.data.history.EventHistory`` gives the same values for the events
    before each interaction.
    """
    users = interactions[USER_ID].to_numpy(np.int64)
    items = interactions[ITEM_ID].to_numpy(np.int64)
    order = _sort_newest_first(users, timestamps_us(interactions[TIMESTAMP]), items)
    return _state_sorted(users[order], items[order])


def _boundaries(first_us: int, last_us: int, every: timedelta) -> list[int]:
    """Snapshot stamps (µs): midnight-aligned steps after the first interaction, then last + 1 s."""
    step = int(every.total_seconds() * 1_000_000)
    if step <= 0:
        raise ValueError("snapshot_every must be positive")
    day = 86_400 * 1_000_000
    t = (first_us // day) * day + step
    out = []
    while t <= last_us:
        out.append(t)
        t += step
    out.append(last_us + 1_000_000)
    return out


def _user_activity(interactions: pd.DataFrame, stamps: list[int]) -> pd.DataFrame:
    users = interactions[USER_ID].to_numpy(np.int64)
    items = interactions[ITEM_ID].to_numpy(np.int64)
    ts = timestamps_us(interactions[TIMESTAMP])
    order = _sort_newest_first(users, ts, items)
    users, items, ts = users[order], items[order], ts[order]
    repeated = pd.DataFrame({"u": users, "i": items}).duplicated(keep=False).to_numpy()
    parts = []
    prev = np.iinfo(np.int64).min
    for stamp in stamps:
        # Users with an interaction in [prev, stamp) changed; their state uses all rows < stamp.
        window = (ts >= prev) & (ts < stamp)
        changed = np.unique(users[window])
        if len(changed):
            keep = (ts < stamp) & np.isin(users, changed, assume_unique=False)
            state = _state_sorted(users[keep], items[keep], repeated[keep])
            state.insert(1, EVENT_TIMESTAMP, pd.Timestamp(stamp, unit="us", tz="UTC"))
            parts.append(state)
            logger.debug(
                "activity snapshot %s: %d users", parts[-1][EVENT_TIMESTAMP].iloc[0], len(state)
            )
        prev = stamp
    out = pd.concat(parts, ignore_index=True)
    out[EVENT_TIMESTAMP] = out[EVENT_TIMESTAMP].astype(_TS_DTYPE)
    return out


# The item tower sees popularity and age only through log2 buckets (``two_tower.towers.
# log2_bucket``: floor(log2(x + 1)), clipped to these counts); an item row is written when one of
# them changes, so a point-in-time join gives the tower what exact event-time values would.
POPULARITY_BUCKETS = 24
AGE_DAYS_BUCKETS = 16
_DAY_US = 86_400 * 1_000_000


def log2_bucket(values: np.ndarray, n_buckets: int) -> np.ndarray:
    """floor(log2(x + 1)) clipped to ``[0, n_buckets - 1]`` (negatives count as 0), exact for
    integer counts; the item tower's float32 version agrees below 2**21 - 2."""
    x = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    out: np.ndarray = np.clip(np.floor(np.log2(x + 1.0)), 0, n_buckets - 1).astype(np.int64)
    return out


def _popularity_stamps(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(item position, stamp) where an item's popularity bucket changes, from its events sorted
    by (item, time): one microsecond after the instant whose events carry the count into a new
    bucket (a row stamped T counts only interactions before T)."""
    n = len(p)
    if n == 0:
        return p, t
    idx = np.arange(n, dtype=np.int64)
    new_item = np.r_[True, p[1:] != p[:-1]]
    last_of_instant = np.r_[(p[1:] != p[:-1]) | (t[1:] != t[:-1]), True]
    after = idx - np.maximum.accumulate(np.where(new_item, idx, 0)) + 1  # count incl. this row
    ends = np.flatnonzero(last_of_instant)
    count = after[ends]
    first = new_item[np.r_[0, ends[:-1] + 1]]  # the instant is the item's first
    before = np.where(first, 0, np.r_[0, count[:-1]])
    changed = log2_bucket(count, POPULARITY_BUCKETS) != log2_bucket(before, POPULARITY_BUCKETS)
    return p[ends[changed]], t[ends[changed]] + 1


def _counts_before(
    ev_pos: np.ndarray, ev_ts: np.ndarray, pos: np.ndarray, stamps: np.ndarray
) -> np.ndarray:
    """For each (pos, stamp): the events of that item strictly before ``stamp``, from the events
    sorted by (item, time). (item, time) becomes one sorted int64 key, ``item * span + time``
    with times relative to the first event; where that could overflow, times are first replaced
    by their rank among the event times (slower: a hash of every time)."""
    out = np.zeros(len(pos), dtype=np.int64)
    if len(ev_ts) == 0:
        return out
    t0 = int(ev_ts.min())
    ask = stamps > t0  # no event is before a stamp at or before the first event
    q_pos, q_t = pos[ask], stamps[ask]
    span = int(ev_ts.max()) - t0 + 2
    n_items = int(max(ev_pos.max(), q_pos.max() if len(q_pos) else 0)) + 1
    if n_items * span < 2**62:
        ev_time, q_time = ev_ts - t0, np.minimum(q_t - t0, span - 1)
    else:
        times = np.unique(ev_ts)
        span = len(times) + 1
        ev_time, q_time = np.searchsorted(times, ev_ts), np.searchsorted(times, q_t)
    ev_key = ev_pos * span + ev_time  # sorted: events are sorted by (item, time)
    first = np.searchsorted(ev_key, q_pos * span)
    out[ask] = np.searchsorted(ev_key, q_pos * span + q_time) - first
    return out


def _item_features(ds: Dataset, first_stamp: int, final_stamp: int) -> pd.DataFrame:
    """Item rows written when a value the item tower sees changes, not at every snapshot.

    Per item: a row at release; one when the log2 bucket of ``age_days`` changes (release +
    2**k - 1 days); one when the log2 bucket of ``popularity`` changes (a microsecond after the
    interaction that carries the count into the next bucket); and one at ``final_stamp`` with the
    exact final values (what materialization puts online). Rows before ``first_stamp`` (the
    first interaction) collapse into the newest of them: nothing is asked about that time. Each
    row holds the exact values at its stamp, from interactions strictly before it. Between two
    rows the exact popularity and age stay in the row's buckets, so the point-in-time join gives
    the item tower the same input as an exact event-time computation (up to float32 rounding
    right at an age boundary), in at most ~40 rows per item however often snapshots are taken,
    where restating every item at every snapshot grew with the snapshot frequency (issue 14:
    4.2 GB at 10-minute snapshots). A row stays current until the next one, however long that
    takes, so the view has no TTL. Bucketing was chosen over a separate event-time computation
    of popularity because it keeps Feast the system of record for item features (offline join
    and online store) at no loss for the model.
    """
    items = ds.items.sort_values(ITEM_ID).reset_index(drop=True)
    ids = items[ITEM_ID].to_numpy(np.int64)
    release = timestamps_us(items["release_date"])
    inter_items = ds.interactions[ITEM_ID].to_numpy(np.int64)
    pos = np.searchsorted(ids, inter_items)
    if len(pos) and (pos.max() >= len(ids) or not np.array_equal(ids[pos], inter_items)):
        raise ValueError("interactions reference item ids missing from the items table")
    ts = timestamps_us(ds.interactions[TIMESTAMP])
    order = np.lexsort((ts, pos))
    ev_pos, ev_ts = pos[order], ts[order]
    del order, pos, ts, inter_items
    every_item = np.arange(len(ids), dtype=np.int64)
    age_steps = (2 ** np.arange(AGE_DAYS_BUCKETS, dtype=np.int64) - 1) * _DAY_US  # 0 = release
    pop_pos, pop_stamps = _popularity_stamps(ev_pos, ev_ts)
    row_pos = np.r_[np.repeat(every_item, len(age_steps)), pop_pos, every_item]
    row_stamps = np.r_[
        (release[:, None] + age_steps[None, :]).ravel(),
        pop_stamps,
        np.full(len(ids), final_stamp, np.int64),
    ]
    live = (row_stamps <= final_stamp) & (release[row_pos] <= final_stamp)
    row_pos, row_stamps = row_pos[live], row_stamps[live]
    order = np.lexsort((row_stamps, row_pos))
    row_pos, row_stamps = row_pos[order], row_stamps[order]
    next_same_item = np.r_[row_pos[1:] == row_pos[:-1], False]
    next_stamp = np.r_[row_stamps[1:], np.iinfo(np.int64).max]
    # drop repeated stamps, and rows before the first interaction that a later one also precedes
    keep = ~next_same_item | ((next_stamp != row_stamps) & (next_stamp > first_stamp))
    row_pos, row_stamps = row_pos[keep], row_stamps[keep]
    out = pd.DataFrame(
        {
            ITEM_ID: ids[row_pos],
            EVENT_TIMESTAMP: pd.to_datetime(row_stamps, unit="us", utc=True).astype(_TS_DTYPE),
            "category": items["category"].to_numpy()[row_pos],
            "price_bucket": items["price_bucket"].to_numpy(np.int64)[row_pos],
            "popularity": _counts_before(ev_pos, ev_ts, row_pos, row_stamps),
            "age_days": (np.maximum(row_stamps - release[row_pos], 0) / _DAY_US).astype(np.float32),
        }
    )
    return out


def _user_profile(ds: Dataset) -> pd.DataFrame:
    users = ds.users
    return pd.DataFrame(
        {
            USER_ID: users[USER_ID].to_numpy(np.int64),
            EVENT_TIMESTAMP: users["signup_date"].astype(_TS_DTYPE),
            "age_bucket": users["age_bucket"].to_numpy(np.int64),
            "country": users["country"].to_numpy(),
        }
    ).sort_values([USER_ID], ignore_index=True)


def build_feature_tables(
    ds: Dataset, *, snapshot_every: timedelta | None = None
) -> dict[str, pd.DataFrame]:
    """The three Feast offline sources of ``ds``, keyed by their file names in schema.py.

    Activity snapshots are stamped at midnight-aligned steps of ``snapshot_every`` (default:
    weekly, or every 30 days above 5M interactions) after the first interaction, plus a final one
    stamped one second after the last interaction; item rows are written when their values
    change (:func:`_item_features`), up to that final stamp. A row stamped T uses only
    interactions before T.
    """
    if len(ds.interactions) == 0:
        raise ValueError(f"data set {ds.name} has no interactions")
    every = snapshot_every or default_snapshot_every(len(ds.interactions))
    ts = timestamps_us(ds.interactions[TIMESTAMP])
    stamps = _boundaries(int(ts.min()), int(ts.max()), every)
    logger.info(
        "building feature tables for %s: %d snapshots every %s", ds.name, len(stamps), every
    )
    # Items first: their sort of the interactions peaks while the activity lists do not exist yet.
    items = _item_features(ds, int(ts.min()), stamps[-1])
    return {
        USER_PROFILE_FILE: _user_profile(ds),
        USER_ACTIVITY_FILE: _user_activity(ds.interactions, stamps),
        ITEM_FEATURES_FILE: items,
    }


def write_feature_tables(tables: dict[str, pd.DataFrame], dataset_dir: Path) -> None:
    """Write the tables from :func:`build_feature_tables` into ``dataset_dir/features/``."""
    out = Path(dataset_dir) / FEATURES_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        tmp = out / f".{name}.tmp"
        df.to_parquet(tmp, index=False)
        tmp.replace(out / name)
    logger.info("wrote feature tables to %s", out)
