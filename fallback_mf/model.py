"""The trained ALS model as plain numpy arrays, scored without ``implicit``.

Training and evaluation use it (it imports ``cascade.recommenders``, hence pandas); the MF
service does not: it serves ``fallback_mf.service.scoring.AlsScorer``, built from the artifact
alone. Scoring is ``user_factors[u] @ item_factors.T`` with the user's training items and any
extra exclusions masked, top k by ``np.argpartition``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cascade.recommenders import (
    PAD_ITEM,
    FloatArray,
    IntArray,
    PopularityRecommender,
    UserItems,
    check_request,
    top_k,
)

# Rows scored per matrix product in batch recommend: bounds the score buffer to ~64 MB.
_SCORE_BUFFER = 1 << 24


@dataclass
class AlsModel:
    """ALS factors and id maps; implements :class:`cascade.recommenders.Recommender`.

    ``user_ids[u]`` / ``item_ids[i]`` map row indices to original ids (both sorted ascending).
    ``seen`` holds each user's training items as item *indices*, one row per user index.
    ``popular`` answers for users the model has never seen.
    """

    user_factors: FloatArray
    item_factors: FloatArray
    user_ids: IntArray
    item_ids: IntArray
    seen: UserItems
    popular: PopularityRecommender
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = "als"
    # Each item's category name in item_ids order ("" = unknown); None: not known (the
    # artifact then cannot serve category filters).
    item_categories: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return int(self.user_factors.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])

    def user_positions(self, user_ids: np.ndarray) -> IntArray:
        """Row index of each original user id, -1 when unknown."""
        return self.seen.positions(user_ids)

    def item_positions(self, item_ids: np.ndarray) -> IntArray:
        """Row index of each original item id, -1 when unknown."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if self.n_items == 0:
            return np.full(len(item_ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.item_ids, item_ids), self.n_items - 1)
        return np.where(self.item_ids[pos] == item_ids, pos, -1).astype(np.int64)

    def recommend(
        self, user_ids: np.ndarray, *, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[IntArray, FloatArray]:
        """Top ``k`` items per user by factor dot product (rules: ``cascade.recommenders``)."""
        users = check_request(user_ids, k, exclude)
        out_items = np.full((len(users), k), PAD_ITEM, dtype=np.int64)
        out_scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        positions = self.user_positions(users)
        known = np.flatnonzero(positions >= 0)
        unknown = np.flatnonzero(positions < 0)
        chunk = max(1, _SCORE_BUFFER // max(1, self.n_items))
        for start in range(0, len(known), chunk):
            rows = known[start : start + chunk]
            scores = self.user_factors[positions[rows]] @ self.item_factors.T
            row_nums, cols = self.seen.rows(positions[rows])
            scores[row_nums, cols] = -np.inf
            if exclude is not None:
                self._mask_exclude(scores, [exclude[int(r)] for r in rows])
            idx, best = top_k(scores, k)
            out_items[rows] = np.where(idx >= 0, self.item_ids[np.maximum(idx, 0)], PAD_ITEM)
            out_scores[rows] = best
        if len(unknown):
            extra = [exclude[int(r)] for r in unknown] if exclude is not None else None
            out_items[unknown], out_scores[unknown] = self.popular.recommend(
                users[unknown], k=k, exclude=extra
            )
        return out_items, out_scores

    def _mask_exclude(self, scores: FloatArray, exclude: Sequence[np.ndarray]) -> None:
        lengths = np.array([len(e) for e in exclude], dtype=np.int64)
        if not lengths.sum():
            return
        flat = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude])
        row_nums = np.repeat(np.arange(len(exclude)), lengths)
        cols = self.item_positions(flat)
        ok = cols >= 0  # unknown item ids cannot be recommended anyway
        scores[row_nums[ok], cols[ok]] = -np.inf
