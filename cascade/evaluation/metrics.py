"""Ranking metrics over a full ranking of the catalogue, computed in user batches.

Definitions (per evaluated user, then averaged over evaluated users):

- relevant set R: the user's test items that are not among the user's train items (an item
  already seen in train is excluded from the ranking, so it could never be hit);
  users with an empty R are not evaluated;
- the ranking: the model's top K over all items, excluding the user's train items;
- ``Recall@K = |topK ∩ R| / min(K, |R|)`` (so a perfect ranking scores 1 at every K);
- ``NDCG@K = DCG@K / IDCG@K``, binary gains, ``DCG = sum_hits 1 / log2(rank + 1)`` with rank
  from 1, IDCG the DCG of ``min(K, |R|)`` hits at the top;
- ``HitRate@K``: share of users with at least one hit in the top K;
- ``Coverage@K``: distinct items recommended in anyone's top K / catalogue size (items in train).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cascade.recommenders import Recommender, UserItems
from cascade.runtime.schema import ITEM_ID, USER_ID

MAX_K = 50
HEADLINE = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "hit_rate@10", "coverage@10")


@dataclass(frozen=True)
class GroundTruth:
    """Who is evaluated, what they saw in train (excluded) and what is relevant in test."""

    user_ids: np.ndarray  # evaluated users, sorted
    train_items: UserItems  # rows for every train user (original item ids)
    relevant: UserItems  # rows for the evaluated users only (original item ids)
    catalogue_size: int  # distinct items in train
    total_users: int  # users with a non-empty relevant set, before sampling


def ground_truth(
    train: pd.DataFrame, test: pd.DataFrame, *, max_users: int | None = None, seed: int = 0
) -> GroundTruth:
    """Build the ground truth; ``max_users`` samples that many evaluated users (seeded)."""
    tr_users, tr_items = train[USER_ID].to_numpy(np.int64), train[ITEM_ID].to_numpy(np.int64)
    t_users, t_items = test[USER_ID].to_numpy(np.int64), test[ITEM_ID].to_numpy(np.int64)
    train_items = UserItems.from_pairs(tr_users, tr_items)
    # drop test pairs already in the user's train items: compare (user, item) as one int64 key
    _, u_dense = np.unique(np.concatenate([tr_users, t_users]), return_inverse=True)
    i_ids, i_dense = np.unique(np.concatenate([tr_items, t_items]), return_inverse=True)
    keys = u_dense.astype(np.int64) * len(i_ids) + i_dense
    keep = ~member(keys[len(tr_users) :], keys[: len(tr_users)])
    relevant = UserItems.from_pairs(t_users[keep], t_items[keep])
    users = relevant.user_ids
    total = len(users)
    if max_users is not None and total > max_users:
        rng = np.random.default_rng(seed)
        users = np.sort(rng.choice(users, size=max_users, replace=False))
        rows, items = relevant.rows(relevant.positions(users))
        relevant = UserItems.from_pairs(users[rows], items)
    catalogue = int(np.count_nonzero(np.bincount(i_dense[: len(tr_items)], minlength=1)))
    return GroundTruth(users, train_items, relevant, catalogue, total)


def member(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """``np.isin(values, pool)`` by sort + binary search (numpy's hash path is slower here)."""
    if len(pool) == 0:
        return np.zeros(len(values), dtype=bool)
    pool = np.sort(pool)
    pos = np.minimum(np.searchsorted(pool, values), len(pool) - 1)
    found: np.ndarray = pool[pos] == values
    return found


def hit_matrix(recs: np.ndarray, relevant: list[np.ndarray]) -> np.ndarray:
    """Boolean ``(n, K)``: whether ``recs[i, j]`` is in ``relevant[i]`` (padding ``-1`` never is)."""
    n, k = recs.shape
    lengths = np.array([len(r) for r in relevant], dtype=np.int64)
    rel = np.concatenate(relevant).astype(np.int64) if len(relevant) else np.empty(0, np.int64)
    # make (row, item) pairs comparable as single integers through a dense item index
    uniq, inv = np.unique(np.concatenate([recs.ravel(), rel]), return_inverse=True)
    m = len(uniq) + 1
    rec_keys = np.repeat(np.arange(n, dtype=np.int64), k) * m + inv[: recs.size]
    rel_keys = np.repeat(np.arange(n, dtype=np.int64), lengths) * m + inv[recs.size :]
    return member(rec_keys, rel_keys).reshape(n, k) & (recs >= 0)


class MetricAccumulator:
    """Sums per-user metrics over batches; :meth:`result` averages them."""

    def __init__(self, *, catalogue_size: int, max_k: int = MAX_K) -> None:
        self.catalogue_size = catalogue_size
        self.max_k = max_k
        self.users = 0
        self.recall_curve = np.zeros(max_k)
        self.sums: dict[str, float] = {"ndcg@10": 0.0, "ndcg@20": 0.0, "hit_rate@10": 0.0}
        self.covered: set[int] = set()
        self._discount = 1.0 / np.log2(np.arange(2, max_k + 2))

    def add(self, recs: np.ndarray, relevant: list[np.ndarray]) -> None:
        """Add one batch: ``recs`` (n, max_k) item ids best first, ``relevant[i]`` non-empty."""
        if recs.shape[1] < self.max_k:
            raise ValueError(f"need {self.max_k} recommendations per user, got {recs.shape[1]}")
        recs = recs[:, : self.max_k]
        hits = hit_matrix(recs, relevant)
        n_rel = np.array([len(r) for r in relevant], dtype=np.float64)
        if (n_rel == 0).any():
            raise ValueError("every evaluated user needs at least one relevant item")
        ks = np.arange(1, self.max_k + 1)
        self.recall_curve += (
            np.cumsum(hits, axis=1) / np.minimum(ks[None, :], n_rel[:, None])
        ).sum(axis=0)
        ideal = np.cumsum(self._discount)
        for k in (10, 20):
            dcg = (hits[:, :k] * self._discount[:k]).sum(axis=1)
            idcg = ideal[np.minimum(k, n_rel).astype(np.int64) - 1]
            self.sums[f"ndcg@{k}"] += float((dcg / idcg).sum())
        self.sums["hit_rate@10"] += float(hits[:, :10].any(axis=1).sum())
        top10 = recs[:, :10]
        self.covered.update(np.unique(top10[top10 >= 0]).tolist())
        self.users += len(recs)

    def result(self) -> dict[str, Any]:
        """Averages: the headline metrics, ``recall_curve`` (K = 1..max_k) and ``users``."""
        n = max(self.users, 1)
        curve = self.recall_curve / n
        out: dict[str, Any] = {
            "recall@10": float(curve[9]),
            "recall@20": float(curve[19]),
            "ndcg@10": self.sums["ndcg@10"] / n,
            "ndcg@20": self.sums["ndcg@20"] / n,
            "hit_rate@10": self.sums["hit_rate@10"] / n,
            "coverage@10": len(self.covered) / max(self.catalogue_size, 1),
        }
        out["recall_curve"] = [float(x) for x in curve]
        out["users"] = self.users
        return out


def evaluate_recommender(
    model: Recommender,
    truth: GroundTruth,
    *,
    batch_size: int = 1024,
    max_k: int = MAX_K,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``truth``: full ranking, train items passed as ``exclude``."""
    acc = MetricAccumulator(catalogue_size=truth.catalogue_size, max_k=max_k)
    users = truth.user_ids
    train_pos = truth.train_items.positions(users)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        exclude = [truth.train_items.row(int(p)) for p in train_pos[start : start + batch_size]]
        recs, _ = model.recommend(batch, k=max_k, exclude=exclude)
        rel_pos = truth.relevant.positions(batch)
        acc.add(np.asarray(recs), [truth.relevant.row(int(p)) for p in rel_pos])
        if progress is not None:
            progress(len(batch))
    return acc.result()
