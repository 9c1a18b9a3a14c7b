"""Turn feature frames into the integer arrays the towers take.

Three kinds of rows, one encoding:

- :class:`UserRows` (user tower input): from training rows (profile columns plus the event-time
  history, whose lists :class:`HistoryLists` materialises per batch), from ``user_state`` + the
  users table at evaluation, or from the gateway's online features (the wire contract);
- :class:`ItemRows` (item tower input): from training rows, or :func:`item_catalogue` built from
  the items table and the training interactions (popularity and age as of the training cutoff,
  so an evaluation never sees test-period popularity);
- :class:`TrainingSet`: aligned user and item rows, one per training interaction.

Missing values: age/price buckets -1, counts 0, country code 0, list items -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cascade.data.history import EventHistory
from cascade.runtime.schema import ITEM_ID, TIMESTAMP, USER_ID
from two_tower import contract
from two_tower.towers import StringVocab

DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class HistoryLists:
    """A list column of a training set, materialised per batch: ``column[rows]`` is the
    ``(len(rows), length)`` int64 array of those rows' recent or seen items (padded with
    ``contract.PAD_ITEM``), so a training set never holds a list per row."""

    history: EventHistory
    kind: str  # "recent" or "seen"
    length: int

    def __len__(self) -> int:
        return len(self.history)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.length)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if self.kind == "recent":
            return self.history.recent(rows, self.length)
        return self.history.seen(rows, self.length)


@dataclass
class UserRows:
    """User tower inputs, all int64: ``(n,)`` columns and ``(n, RECENT_ITEMS_LEN)`` recent items
    (list columns may be :class:`HistoryLists`; ``take`` and batches give arrays)."""

    user_id: np.ndarray
    age_bucket: np.ndarray
    country: np.ndarray  # contract.country_code values
    interaction_count: np.ndarray
    recent_items: np.ndarray | HistoryLists
    seen_items: np.ndarray | HistoryLists  # (n, seen_len): the newest seen items the tower pools

    def __len__(self) -> int:
        return len(self.user_id)

    def take(self, index: np.ndarray) -> UserRows:
        return UserRows(*(getattr(self, f)[index] for f in _USER_FIELDS))

    def as_dict(self) -> dict[str, Any]:
        """Columns by name: arrays, or :class:`HistoryLists` indexed per batch."""
        return {f: getattr(self, f) for f in _USER_FIELDS}


_USER_FIELDS = (
    "user_id",
    "age_bucket",
    "country",
    "interaction_count",
    "recent_items",
    "seen_items",
)


@dataclass
class ItemRows:
    """Item tower inputs: ids, category index (StringVocab), price bucket, popularity, age_days."""

    item_id: np.ndarray
    category: np.ndarray
    price_bucket: np.ndarray
    popularity: np.ndarray
    age_days: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.item_id)

    def take(self, index: np.ndarray) -> ItemRows:
        return ItemRows(*(getattr(self, f)[index] for f in _ITEM_FIELDS))

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in _ITEM_FIELDS}


_ITEM_FIELDS = ("item_id", "category", "price_bucket", "popularity", "age_days")


@dataclass
class TrainingSet:
    """One row per training interaction: the user's and the item's features at that moment."""

    users: UserRows
    items: ItemRows
    history: EventHistory | None = None  # the rows' event-time history (None: rows only)

    def __len__(self) -> int:
        return len(self.users)


def _ints(values: pd.Series | np.ndarray, missing: int) -> np.ndarray:
    series = pd.Series(values)
    out: np.ndarray = series.astype("Float64").fillna(missing).to_numpy(dtype=np.int64)
    return out


def pad_lists(lists: pd.Series | np.ndarray | list[object], length: int) -> np.ndarray:
    """``(n, length)`` int64: each list truncated / right-padded with -1 (None -> all -1)."""
    values = list(lists)
    out = np.full((len(values), length), contract.PAD_ITEM, dtype=np.int64)
    for i, v in enumerate(values):
        if v is None:
            continue
        arr = np.asarray(v, dtype=np.int64)[:length]
        out[i, : len(arr)] = arr
    return out


def country_codes(values: pd.Series | np.ndarray | list[object]) -> np.ndarray:
    """:func:`two_tower.contract.country_code` of each value (missing -> 0), computed once per
    distinct value."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object))  # missing -> code -1
    table = np.array([contract.country_code(v) for v in uniques] + [0], dtype=np.int64)
    out: np.ndarray = table[codes]
    return out


def _encode_categories(values: np.ndarray, categories: StringVocab) -> np.ndarray:
    """``categories.encode`` of each value, computed once per distinct value (missing -> 0)."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object))
    table = np.r_[categories.encode(np.asarray(uniques, dtype=object)), 0].astype(np.int64)
    out: np.ndarray = table[codes]
    return out


def user_rows(frame: pd.DataFrame, *, seen_len: int = contract.MAX_SEEN_ITEMS) -> UserRows:
    """Rows from a frame with user_id, age_bucket, country, interaction_count, recent_items, seen_items.

    ``seen_len`` keeps only the newest seen items (the tower pools at most ``seen_pool``): a
    training set of 700K rows would otherwise hold 500 ids per row.
    """
    return UserRows(
        user_id=frame[USER_ID].to_numpy(np.int64),
        age_bucket=_ints(frame["age_bucket"], -1),
        country=country_codes(frame["country"].to_numpy(dtype=object)),
        interaction_count=_ints(frame["interaction_count"], 0),
        recent_items=pad_lists(frame["recent_items"], contract.RECENT_ITEMS_LEN),
        seen_items=pad_lists(frame["seen_items"], seen_len),
    )


def training_user_rows(frame: pd.DataFrame, history: EventHistory, *, seen_len: int) -> UserRows:
    """Rows from a training frame (user_id, age_bucket, country) and its rows' event-time
    ``history``: counts as arrays, lists as :class:`HistoryLists`."""
    if len(frame) != len(history):
        raise ValueError(f"{len(frame)} training rows but {len(history)} histories")
    return UserRows(
        user_id=frame[USER_ID].to_numpy(np.int64),
        age_bucket=_ints(frame["age_bucket"], -1),
        country=country_codes(frame["country"].to_numpy(dtype=object)),
        interaction_count=history.counts(),
        recent_items=HistoryLists(history, "recent", contract.RECENT_ITEMS_LEN),
        seen_items=HistoryLists(history, "seen", seen_len),
    )


def item_rows(frame: pd.DataFrame, categories: StringVocab) -> ItemRows:
    """Rows from a frame with item_id, category, price_bucket, popularity, age_days."""
    return ItemRows(
        item_id=frame[ITEM_ID].to_numpy(np.int64),
        category=_encode_categories(frame["category"].to_numpy(dtype=object), categories),
        price_bucket=_ints(frame["price_bucket"], -1),
        popularity=_ints(frame["popularity"], 0),
        age_days=pd.Series(frame["age_days"]).astype("float64").fillna(0.0).to_numpy(np.float32),
    )


def training_set(
    frame: pd.DataFrame, history: EventHistory, categories: StringVocab, *, seen_len: int
) -> TrainingSet:
    """A :class:`TrainingSet` from training rows (``two_tower.training_frames.TrainingRows``:
    the frame and its rows' event-time history)."""
    return TrainingSet(
        users=training_user_rows(frame, history, seen_len=seen_len),
        items=item_rows(frame, categories),
        history=history,
    )


def item_catalogue(
    items: pd.DataFrame, interactions: pd.DataFrame, item_ids: np.ndarray
) -> pd.DataFrame:
    """Item features of ``item_ids`` as of the last interaction in ``interactions``.

    ``popularity`` counts ``interactions`` (the training side only), ``age_days`` runs from
    ``release_date`` to the cutoff. Columns as the Feast ``item_features`` view.
    """
    table = items.set_index(ITEM_ID).reindex(item_ids)
    counts = interactions[ITEM_ID].value_counts()
    cutoff = pd.Timestamp(interactions[TIMESTAMP].max())
    release = pd.to_datetime(table["release_date"], utc=True)
    age = ((cutoff - release).dt.total_seconds() / 86_400.0).fillna(0.0).clip(lower=0.0)
    return pd.DataFrame(
        {
            ITEM_ID: np.asarray(item_ids, dtype=np.int64),
            "category": table["category"].to_numpy(dtype=object),
            "price_bucket": table["price_bucket"].to_numpy(),
            "popularity": counts.reindex(item_ids).fillna(0).to_numpy(np.int64),
            "age_days": age.to_numpy(np.float32),
        }
    )


def user_table(users: pd.DataFrame, state: pd.DataFrame) -> pd.DataFrame:
    """Profile (age_bucket, country) joined onto ``cascade.data.features.user_state`` rows."""
    profile = users[[USER_ID, "age_bucket", "country"]].drop_duplicates(USER_ID)
    return state.merge(profile, on=USER_ID, how="left")
