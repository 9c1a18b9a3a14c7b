"""The one recommender interface every tier implements, and the popularity recommender.

Rules every tier follows (checked by ``tests/contract.py``):

- input: original user ids (int64), output ``(item_ids int64 (n, k), scores float32 (n, k))``;
- each row sorted by score, descending;
- no item the user interacted with in the model's training data, none of the extra
  ``exclude[i]`` items, no unknown item id;
- exactly ``k`` items unless the catalogue has fewer unseen items; the row is then padded with
  item ``-1`` and score ``-inf``;
- a user the model has never seen gets the most popular items.

The helpers here (:class:`UserItems`, :func:`top_k`) are shared by the tiers so they apply the
rules the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd

from cascade.runtime.schema import ITEM_ID, USER_ID

PAD_ITEM = -1
_POPULAR_CHUNK = 512  # users per vectorised block in PopularityRecommender

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


@runtime_checkable
class Recommender(Protocol):
    """A top-k recommender over original ids. See the module docstring for the rules."""

    name: str

    def recommend(
        self, user_ids: np.ndarray, *, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` items per user: ``(item_ids int64 (n, k), scores float32 (n, k))``."""
        ...


@dataclass(frozen=True)
class UserItems:
    """Each user's set of items as CSR rows, keyed by sorted original user ids.

    ``indices`` holds whatever item keys the owner chooses (original ids for popularity, item
    indices for ALS). Lookups are vectorised with ``np.searchsorted``.
    """

    user_ids: IntArray  # sorted, unique
    indptr: IntArray  # len(user_ids) + 1
    indices: IntArray

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray) -> UserItems:
        """Build from parallel (user, item) arrays; duplicates are dropped, rows sorted."""
        u = np.asarray(users, dtype=np.int64).reshape(-1)
        i = np.asarray(items, dtype=np.int64).reshape(-1)
        order = np.lexsort((i, u))
        u, i = u[order], i[order]
        keep = np.ones(len(u), dtype=bool)
        keep[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
        u, i = u[keep], i[keep]
        starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if len(u) else np.empty(0, np.int64)
        indptr = np.append(starts, len(u)).astype(np.int64)
        return cls(user_ids=u[starts], indptr=indptr, indices=i)

    def positions(self, user_ids: np.ndarray) -> IntArray:
        """Row of each user, or -1 when unknown."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if len(self.user_ids) == 0:
            return np.full(len(user_ids), -1, dtype=np.int64)
        pos = np.searchsorted(self.user_ids, user_ids)
        pos = np.minimum(pos, len(self.user_ids) - 1)
        return np.where(self.user_ids[pos] == user_ids, pos, -1).astype(np.int64)

    def row(self, position: int) -> IntArray:
        """Items of the user at ``position`` (empty for -1)."""
        if position < 0:
            return np.empty(0, dtype=np.int64)
        return self.indices[self.indptr[position] : self.indptr[position + 1]]

    def rows(self, positions: np.ndarray) -> tuple[IntArray, IntArray]:
        """``(row_number, item)`` pairs for several rows at once (row_number indexes ``positions``)."""
        positions = np.asarray(positions, dtype=np.int64)
        known = positions >= 0
        starts = np.where(known, self.indptr[np.maximum(positions, 0)], 0)
        ends = np.where(known, self.indptr[np.maximum(positions, 0) + 1], 0)
        lengths = ends - starts
        row_numbers = np.repeat(np.arange(len(positions), dtype=np.int64), lengths)
        # offsets within each row: global arange minus the row's start in the output
        out_starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        flat = np.repeat(starts, lengths) + (
            np.arange(int(lengths.sum()), dtype=np.int64) - out_starts
        )
        return row_numbers, self.indices[flat]


def top_k(scores: np.ndarray, k: int) -> tuple[IntArray, FloatArray]:
    """Column indices and scores of the ``k`` best per row, best first.

    Masked entries must be ``-inf``; they come back as index -1 / score -inf, and only when a row
    has fewer than ``k`` finite scores. Ties break towards the lower column index.
    """
    n, m = scores.shape
    kk = min(k, m)
    if kk == 0:
        return np.full((n, k), PAD_ITEM, np.int64), np.full((n, k), -np.inf, np.float32)
    if kk < m:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    part_scores = np.take_along_axis(scores, part, axis=1)
    # lexsort: primary key -score, secondary the column index (deterministic ties)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    best = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    idx[~np.isfinite(best)] = PAD_ITEM
    best[~np.isfinite(best)] = -np.inf
    if kk < k:
        idx = np.pad(idx, ((0, 0), (0, k - kk)), constant_values=PAD_ITEM)
        best = np.pad(best, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return idx, best


def check_request(user_ids: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None) -> IntArray:
    """Validate a ``recommend`` call's arguments and return the user ids as int64."""
    users = np.asarray(user_ids, dtype=np.int64).reshape(-1)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if exclude is not None and len(exclude) != len(users):
        raise ValueError(f"exclude has {len(exclude)} rows for {len(users)} users")
    return users


class PopularityRecommender:
    """Most-interacted items first, skipping each user's seen items and ``exclude``.

    ``items`` is the ranked catalogue (ties broken by item id), ``counts`` its interaction counts
    (also the scores). ``seen`` holds each training user's items (original ids); a user not in it
    just gets the global ranking minus ``exclude``.
    """

    name = "popular"

    def __init__(
        self, *, items: np.ndarray, counts: np.ndarray, seen: UserItems | None = None
    ) -> None:
        self.items: IntArray = np.asarray(items, dtype=np.int64)
        self.counts: IntArray = np.asarray(counts, dtype=np.int64)
        if self.items.shape != self.counts.shape:
            raise ValueError("items and counts must have the same length")
        self._scores = self.counts.astype(np.float32)
        order = np.argsort(self.items, kind="stable")
        self._sorted_items = self.items[order]
        self._sorted_rank = order.astype(np.int64)  # rank of self._sorted_items[j]
        self.seen = seen

    @classmethod
    def from_interactions(
        cls, interactions: pd.DataFrame, *, with_seen: bool = True
    ) -> PopularityRecommender:
        """Rank items by their number of interactions in ``interactions``."""
        items, counts = np.unique(interactions[ITEM_ID].to_numpy(np.int64), return_counts=True)
        order = np.lexsort((items, -counts))
        seen = None
        if with_seen:
            seen = UserItems.from_pairs(
                interactions[USER_ID].to_numpy(np.int64), interactions[ITEM_ID].to_numpy(np.int64)
            )
        return cls(items=items[order], counts=counts[order], seen=seen)

    def recommend(
        self, user_ids: np.ndarray, *, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[IntArray, FloatArray]:
        """Top ``k`` popular items per user; see the module docstring for the rules."""
        users = check_request(user_ids, k, exclude)
        out_items = np.full((len(users), k), PAD_ITEM, dtype=np.int64)
        out_scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        positions = self.seen.positions(users) if self.seen is not None else np.full(len(users), -1)
        for start in range(0, len(users), _POPULAR_CHUNK):
            rows = slice(start, start + _POPULAR_CHUNK)
            extra = exclude[rows] if exclude is not None else None
            items, scores = self._top_free(positions[rows], extra, k)
            out_items[rows], out_scores[rows] = items, scores
        return out_items, out_scores

    def _top_free(
        self, positions: np.ndarray, exclude: Sequence[np.ndarray] | None, k: int
    ) -> tuple[IntArray, FloatArray]:
        """The first ``k`` ranked items per row that are neither seen nor excluded."""
        n = len(positions)
        if self.seen is not None:
            row_nums, skip = self.seen.rows(positions)
        else:
            row_nums, skip = np.empty(0, np.int64), np.empty(0, np.int64)
        if exclude is not None:
            lengths = np.array([len(e) for e in exclude], dtype=np.int64)
            if lengths.sum():
                row_nums = np.concatenate([row_nums, np.repeat(np.arange(n), lengths)])
                skip = np.concatenate([skip, *(np.asarray(e, dtype=np.int64) for e in exclude)])
        # rank of each skipped item in the ranking (-1: not in the catalogue)
        ranks = self._rank_of(skip)
        # at most c of a row's first k + c ranked items can be skipped (c: the row's skip count)
        head = min(len(self.items), k + int(np.bincount(row_nums, minlength=1).max(initial=0)))
        blocked = np.zeros((n, head), dtype=bool)
        hit = (ranks >= 0) & (ranks < head)
        blocked[row_nums[hit], ranks[hit]] = True
        free = ~blocked
        taken = np.cumsum(free, axis=1)
        r, c = np.nonzero(free & (taken <= k))
        items = np.full((n, k), PAD_ITEM, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        items[r, taken[r, c] - 1] = self.items[c]
        scores[r, taken[r, c] - 1] = self._scores[c]
        return items, scores

    def _rank_of(self, item_ids: np.ndarray) -> IntArray:
        if len(self.items) == 0:
            return np.full(len(item_ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_items, item_ids), len(self.items) - 1)
        found = self._sorted_items[pos] == item_ids
        return np.where(found, self._sorted_rank[pos], -1).astype(np.int64)
