"""Offline feature tables: the parquet sources that the Feast feature repo reads.

Every row is a snapshot of an entity's features as of its ``event_timestamp``, computed only from
interactions strictly before that moment, so Feast's point-in-time joins never leak the future.

- ``user_profile``: one row per user, stamped at ``signup_date`` (age_bucket, country).
- ``user_activity``: :func:`user_state` at each snapshot boundary, one row per user whose state
  changed since the previous snapshot, plus a final snapshot stamped just after the last
  interaction (its values are the full history: what materialization puts online).
- ``item_features``: category, price_bucket, popularity (interactions before the snapshot) and
  age_days at each boundary, for every item released by then.

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


def _ts_int(ts: pd.Series) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch (UTC)."""
    naive = ts.astype(_TS_DTYPE).dt.tz_localize(None).to_numpy("datetime64[us]")
    out: np.ndarray = naive.view(np.int64)
    return out


def _sort_newest_first(users: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Row order grouped by user, newest first; equal timestamps: the later row is newer."""
    order = np.lexsort((ts, users))  # stable: user asc, ts asc, row position asc
    return order[::-1]


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
    MAX_SEEN_ITEMS). One row per user present, sorted by user_id. Rows with equal timestamps count
    the later row as newer. This is the one definition of a user's activity, used for the feature
    snapshots and by evaluation (the state at the end of the train split).
    """
    users = interactions[USER_ID].to_numpy(np.int64)
    items = interactions[ITEM_ID].to_numpy(np.int64)
    order = _sort_newest_first(users, _ts_int(interactions[TIMESTAMP]))
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
    ts = _ts_int(interactions[TIMESTAMP])
    order = _sort_newest_first(users, ts)
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


def _item_features(ds: Dataset, stamps: list[int]) -> pd.DataFrame:
    items = ds.items.sort_values(ITEM_ID).reset_index(drop=True)
    ids = items[ITEM_ID].to_numpy(np.int64)
    release = _ts_int(items["release_date"])
    inter_items = ds.interactions[ITEM_ID].to_numpy(np.int64)
    pos = np.searchsorted(ids, inter_items)
    if len(pos) and (pos.max() >= len(ids) or not np.array_equal(ids[pos], inter_items)):
        raise ValueError("interactions reference item ids missing from the items table")
    ts = _ts_int(ds.interactions[TIMESTAMP])
    t_order = np.argsort(ts, kind="stable")
    ts_sorted, pos_sorted = ts[t_order], pos[t_order]
    counts = np.zeros(len(ids), dtype=np.int64)
    done = 0
    parts = []
    for stamp in stamps:
        upto = int(np.searchsorted(ts_sorted, stamp, side="left"))  # rows with ts < stamp
        counts += np.bincount(pos_sorted[done:upto], minlength=len(ids))
        done = upto
        live = release <= stamp
        parts.append(
            pd.DataFrame(
                {
                    ITEM_ID: ids[live],
                    EVENT_TIMESTAMP: pd.Timestamp(stamp, unit="us", tz="UTC"),
                    "category": items["category"].to_numpy()[live],
                    "price_bucket": items["price_bucket"].to_numpy(np.int64)[live],
                    "popularity": counts[live].copy(),
                    "age_days": ((stamp - release[live]) / 86_400e6).astype(np.float32),
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    out[EVENT_TIMESTAMP] = out[EVENT_TIMESTAMP].astype(_TS_DTYPE)
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

    Snapshots are stamped at midnight-aligned steps of ``snapshot_every`` (default: weekly, or
    every 30 days above 5M interactions) after the first interaction, plus a final one stamped one
    second after the last interaction. A snapshot stamped T uses only interactions before T.
    """
    if len(ds.interactions) == 0:
        raise ValueError(f"data set {ds.name} has no interactions")
    every = snapshot_every or default_snapshot_every(len(ds.interactions))
    ts = _ts_int(ds.interactions[TIMESTAMP])
    stamps = _boundaries(int(ts.min()), int(ts.max()), every)
    logger.info(
        "building feature tables for %s: %d snapshots every %s", ds.name, len(stamps), every
    )
    return {
        USER_PROFILE_FILE: _user_profile(ds),
        USER_ACTIVITY_FILE: _user_activity(ds.interactions, stamps),
        ITEM_FEATURES_FILE: _item_features(ds, stamps),
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
