"""EASE (Steck, 2019, "Embarrassingly Shallow Autoencoders"): the reference model of evaluation.

A plain full-history item-item model, there so that every ``cascade evaluate`` shows what such a
model reaches on the data. With ``X`` the binary users x items matrix of the training
interactions::

    P = (XᵀX + λI)⁻¹        B = I - P · diag(1 / diag(P))   (so diag(B) = 0)
    scores(u) = X_u · B

λ is chosen on validation (:func:`select_lambda`): each user's latest training interactions are
held out (:func:`cascade.evaluation.split.temporal_split`), EASE is fitted on the rest for every
λ of the grid, and the λ with the best Recall@20 on the held-out part wins (the earlier in the
grid on a tie); the model is then refitted on all training interactions (:func:`fit_ease`).
EASE has no artifact: it is fitted in memory whenever it is asked for.

Cost: ``XᵀX`` and its inverse are dense ``items x items`` float32 (1.6 GB at 20K items, two of
them while λ is chosen) and the inverse takes O(items³) time, so a catalogue above
:data:`MAX_ITEMS` is refused with :class:`CatalogueTooLarge` before anything is allocated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg import lapack

from cascade.evaluation.metrics import evaluate_recommender, ground_truth
from cascade.evaluation.model_data import ModelUnavailable
from cascade.evaluation.split import SplitParams, temporal_split
from cascade.recommenders import (
    PAD_ITEM,
    FloatArray,
    IntArray,
    PopularityRecommender,
    UserItems,
    check_request,
    top_k,
)
from cascade.runtime.schema import ITEM_ID, USER_ID

logger = logging.getLogger(__name__)

MAX_ITEMS = 20_000  # above this, the dense item x item matrices do not belong in evaluation
LAMBDA_GRID = (10.0, 50.0, 100.0, 300.0, 1000.0, 3000.0)
DEFAULT_LAMBDA = 300.0  # used only when the training data leaves no validation users
SELECTION_K = 20  # λ is chosen by Recall@SELECTION_K
VALIDATION_MAX_USERS = 10_000  # validation users sampled (seeded) when there are more

_SCORE_BUFFER = 1 << 24  # scores per block in recommend (64 MB of float32)
_GRAM_BUFFER = 1 << 24  # Gram entries built per block of rows (64 MB of float32)
_MIRROR_BLOCK = 2048  # rows per block when the inverse's lower triangle is copied to the upper


class CatalogueTooLarge(ModelUnavailable):
    """The catalogue has more items than EASE's dense item x item matrices are allowed."""


@dataclass(frozen=True)
class LambdaSelection:
    """The λ chosen on validation and the Recall@20 of each λ tried (grid order)."""

    lam: float
    recall: dict[float, float]
    validation_users: int


@dataclass
class EaseRecommender:
    """EASE weights and id maps; implements :class:`cascade.recommenders.Recommender`.

    ``weights`` is ``B`` (items x items float32, zero diagonal), ``item_ids[i]`` the original id
    of column ``i`` (sorted). ``history`` holds each training user's items as a binary CSR row,
    in the order of ``seen.user_ids``; ``seen`` is the same rows as item indices (masked out of
    the ranking). ``popular`` answers for users the model has never seen.
    """

    weights: FloatArray
    item_ids: IntArray
    history: sp.csr_matrix
    seen: UserItems
    popular: PopularityRecommender
    report_params: dict[str, Any] = field(default_factory=dict)
    name: str = "ease"

    @classmethod
    def fit(cls, interactions: pd.DataFrame, *, lam: float) -> EaseRecommender:
        """Fit EASE with regularisation ``lam`` on ``interactions`` (repeats count once)."""
        history, user_ids, item_ids = binary_matrix(interactions)
        weights = ease_weights(gram_matrix(history), lam, overwrite=True)
        seen = UserItems(
            user_ids=user_ids,
            indptr=history.indptr.astype(np.int64),
            indices=history.indices.astype(np.int64),
        )
        popular = PopularityRecommender.from_interactions(interactions, with_seen=False)
        return cls(weights=weights, item_ids=item_ids, history=history, seen=seen, popular=popular)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_positions(self, item_ids: np.ndarray) -> IntArray:
        """Column of each original item id, -1 when unknown."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if self.n_items == 0:
            return np.full(len(item_ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.item_ids, item_ids), self.n_items - 1)
        return np.where(self.item_ids[pos] == item_ids, pos, -1).astype(np.int64)

    def recommend(
        self, user_ids: np.ndarray, *, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[IntArray, FloatArray]:
        """Top ``k`` items per user by ``X_u · B`` (rules: ``cascade.recommenders``)."""
        users = check_request(user_ids, k, exclude)
        out_items = np.full((len(users), k), PAD_ITEM, dtype=np.int64)
        out_scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        positions = self.seen.positions(users)
        known = np.flatnonzero(positions >= 0)
        unknown = np.flatnonzero(positions < 0)
        chunk = max(1, _SCORE_BUFFER // max(1, self.n_items))
        for start in range(0, len(known), chunk):
            rows = known[start : start + chunk]
            scores = np.asarray(self.history[positions[rows]] @ self.weights, dtype=np.float32)
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


def binary_matrix(interactions: pd.DataFrame) -> tuple[sp.csr_matrix, IntArray, IntArray]:
    """``(X as binary CSR float32 users x items, user_ids, item_ids)``; ids sorted, repeats once."""
    if interactions.empty:
        raise ValueError("no interactions to fit EASE on")
    user_ids, u_idx = np.unique(interactions[USER_ID].to_numpy(np.int64), return_inverse=True)
    item_ids, i_idx = np.unique(interactions[ITEM_ID].to_numpy(np.int64), return_inverse=True)
    x = sp.csr_matrix(
        (np.ones(len(u_idx), dtype=np.float32), (u_idx, i_idx)),
        shape=(len(user_ids), len(item_ids)),
        dtype=np.float32,
    )
    x.sum_duplicates()
    x.sort_indices()
    x.data[:] = 1.0  # a repeated pair is one interaction
    return x, user_ids.astype(np.int64), item_ids.astype(np.int64)


def gram_matrix(x: sp.csr_matrix) -> FloatArray:
    """Dense ``XᵀX`` (float32), built a block of rows at a time from the sparse product.

    The sparse product of the whole matrix could hold as many entries as the dense result, at
    twice the bytes; a block bounds that to :data:`_GRAM_BUFFER` entries.
    """
    n = x.shape[1]
    gram = np.empty((n, n), dtype=np.float32)
    xt = x.T.tocsr()
    step = max(1, _GRAM_BUFFER // max(1, n))
    for start in range(0, n, step):
        stop = min(n, start + step)
        gram[start:stop] = (xt[start:stop] @ x).toarray()
    return gram


def ease_weights(gram: FloatArray, lam: float, *, overwrite: bool = False) -> FloatArray:
    """``B`` from the Gram matrix: ``B = I - P · diag(1 / diag(P))``, ``P = (G + λI)⁻¹``.

    Float32 Cholesky inverse (LAPACK ``spotrf`` + ``spotri``) in place, so with ``overwrite`` the
    only items x items matrix is ``gram`` itself, which becomes ``B``.
    """
    if not lam > 0:
        raise ValueError(f"EASE needs λ > 0, got {lam}")
    a = gram if overwrite else gram.copy()
    n = a.shape[0]
    a.flat[:: n + 1] += np.float32(lam)
    # LAPACK is column-major: a.T is the same symmetric matrix in Fortran order, so the calls work
    # in place; their "upper" triangle is a's lower one.
    chol, info = lapack.spotrf(a.T, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"Gram + λI is not positive definite (spotrf info {info})")
    inv, info = lapack.spotri(chol, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"Gram + λI cannot be inverted (spotri info {info})")
    if not np.shares_memory(inv, a):  # LAPACK copied after all: keep working on ``a``
        a[...] = inv.T
    _mirror_lower(a)
    diag = a.diagonal().copy()
    a /= -diag  # column j divided by -P_jj
    np.fill_diagonal(a, 0.0)
    return a


def _mirror_lower(a: FloatArray) -> None:
    """Copy the lower triangle of ``a`` onto the upper one, in place, a block of rows at a time."""
    n = a.shape[0]
    for start in range(0, n, _MIRROR_BLOCK):
        stop = min(n, start + _MIRROR_BLOCK)
        a[start:stop, stop:] = a[stop:, start:stop].T
        block = a[start:stop, start:stop]
        block[...] = np.tril(block) + np.tril(block, -1).T


def check_catalogue(interactions: pd.DataFrame, *, max_items: int | None = None) -> int:
    """The number of items; :class:`CatalogueTooLarge` when above ``max_items`` (default
    :data:`MAX_ITEMS`)."""
    limit = MAX_ITEMS if max_items is None else max_items
    n_items = int(interactions[ITEM_ID].nunique())
    if n_items > limit:
        gib = 2 * n_items**2 * 4 / 2**30
        raise CatalogueTooLarge(
            f"catalogue has {n_items:,} items, above EASE's limit of {limit:,} "
            f"(dense item x item matrices, ~{gib:.0f} GiB)"
        )
    return n_items


def select_lambda(
    train: pd.DataFrame,
    *,
    grid: Sequence[float] = LAMBDA_GRID,
    validation: SplitParams | None = None,
    max_users: int | None = VALIDATION_MAX_USERS,
    seed: int = 0,
) -> LambdaSelection:
    """Choose λ from ``grid`` by Recall@20 on a per-user temporal hold-out of ``train``.

    The Gram matrix of the fitting part is built once and each λ inverts a copy of it. Ties go
    to the earlier λ of the grid. A grid of one λ is returned as it is; when no user has enough
    interactions to hold any out, :data:`DEFAULT_LAMBDA` is; both with ``validation_users == 0``.
    """
    grid = [float(g) for g in grid]
    if not grid:
        raise ValueError("the λ grid is empty")
    if len(grid) == 1:
        return LambdaSelection(lam=grid[0], recall={}, validation_users=0)
    split = validation or SplitParams()
    fit_part, held_out = temporal_split(
        train, test_fraction=split.test_fraction, min_interactions=split.min_interactions
    )
    truth = ground_truth(fit_part, held_out, max_users=max_users, seed=seed)
    if len(truth.user_ids) == 0:
        logger.warning(
            "EASE: no user can hold out interactions; λ = %g unvalidated", DEFAULT_LAMBDA
        )
        return LambdaSelection(lam=DEFAULT_LAMBDA, recall={}, validation_users=0)
    history, user_ids, item_ids = binary_matrix(fit_part)
    gram = gram_matrix(history)
    seen = UserItems(
        user_ids=user_ids,
        indptr=history.indptr.astype(np.int64),
        indices=history.indices.astype(np.int64),
    )
    popular = PopularityRecommender.from_interactions(fit_part, with_seen=False)
    recall: dict[float, float] = {}
    for lam in grid:
        model = EaseRecommender(
            weights=ease_weights(gram, lam),
            item_ids=item_ids,
            history=history,
            seen=seen,
            popular=popular,
        )
        metrics = evaluate_recommender(model, truth, max_k=SELECTION_K)
        recall[lam] = float(metrics[f"recall@{SELECTION_K}"])
        del model  # free B before the next λ allocates its own
    best = grid[int(np.argmax([recall[g] for g in grid]))]  # ties: the earlier λ of the grid
    logger.info(
        "EASE λ on validation (%d users, Recall@%d): %s; chosen λ = %g",
        len(truth.user_ids),
        SELECTION_K,
        ", ".join(f"{g:g}: {recall[g]:.4f}" for g in grid),
        best,
    )
    return LambdaSelection(lam=best, recall=recall, validation_users=len(truth.user_ids))


def fit_ease(
    train: pd.DataFrame,
    *,
    grid: Sequence[float] = LAMBDA_GRID,
    validation: SplitParams | None = None,
    max_items: int | None = None,
    seed: int = 0,
) -> EaseRecommender:
    """EASE with λ chosen on validation (:func:`select_lambda`), refitted on all of ``train``.

    Raises :class:`CatalogueTooLarge` (a :class:`ModelUnavailable`) above ``max_items`` items
    (default :data:`MAX_ITEMS`). ``report_params`` records λ, the validation Recall@20 of every
    λ and the fit time.
    """
    n_items = check_catalogue(train, max_items=max_items)
    started = time.perf_counter()
    selection = select_lambda(train, grid=grid, validation=validation, seed=seed)
    model = EaseRecommender.fit(train, lam=selection.lam)
    seconds = time.perf_counter() - started
    logger.info(
        "EASE fitted on %d items in %.1f s (λ = %g, refit on all training interactions)",
        n_items,
        seconds,
        selection.lam,
    )
    params = {
        "lambda": selection.lam,
        f"validation_recall@{SELECTION_K}": {f"{g:g}": r for g, r in selection.recall.items()},
        "validation_users": selection.validation_users,
        "items": n_items,
        "fit_seconds": round(seconds, 3),
    }
    return replace(model, report_params=params)
