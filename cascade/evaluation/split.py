"""Temporal per-user split: each user's most recent interactions are the test set."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from cascade.runtime.schema import ITEM_ID, TIMESTAMP, USER_ID

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_MIN_INTERACTIONS = 5


@dataclass(frozen=True)
class SplitParams:
    """The parameters of :func:`temporal_split`; recorded in artifacts and reports."""

    test_fraction: float = DEFAULT_TEST_FRACTION
    min_interactions: int = DEFAULT_MIN_INTERACTIONS
    kind: str = "temporal_per_user"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitParams:
        return cls(
            test_fraction=float(data["test_fraction"]),
            min_interactions=int(data["min_interactions"]),
            kind=str(data.get("kind", "temporal_per_user")),
        )


def n_test_interactions(n: int | np.ndarray, test_fraction: float) -> np.ndarray:
    """How many of a user's ``n`` interactions go to test: ``max(1, floor(n * fraction))``."""
    # floor keeps the train side the majority for small users; the small epsilon stops
    # 10 * 0.2 from flooring to 1.9999 -> 1
    return np.maximum(1, np.floor(np.asarray(n) * test_fraction + 1e-9)).astype(np.int64)


def temporal_split(
    interactions: pd.DataFrame,
    *,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    min_interactions: int = DEFAULT_MIN_INTERACTIONS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``interactions`` per user by time into ``(train, test)``.

    Each user's interactions are ordered by timestamp, ties broken by item id (deterministic).
    A user with at least ``min_interactions`` interactions puts the last
    ``max(1, floor(n * test_fraction))`` into test; a user with fewer stays wholly in train.
    Both frames keep the input's columns and come back sorted by user, time, item.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if min_interactions < 2:
        raise ValueError(f"min_interactions must be >= 2, got {min_interactions}")
    if math.floor(min_interactions * test_fraction + 1e-9) >= min_interactions:
        raise ValueError("test_fraction leaves no training interactions")
    missing = [c for c in (USER_ID, ITEM_ID, TIMESTAMP) if c not in interactions]
    if missing:
        raise ValueError(f"interactions lack columns {missing}")
    ordered = interactions.sort_values([USER_ID, TIMESTAMP, ITEM_ID], kind="mergesort").reset_index(
        drop=True
    )
    users = ordered[USER_ID].to_numpy()
    # per-row position within its user and the user's size (rows are grouped by user)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    size = np.repeat(sizes, sizes)
    rank = np.arange(len(users)) - np.repeat(starts, sizes)
    is_test = (size >= min_interactions) & (rank >= size - n_test_interactions(size, test_fraction))
    train = ordered.loc[~is_test].reset_index(drop=True)
    test = ordered.loc[is_test].reset_index(drop=True)
    return train, test
