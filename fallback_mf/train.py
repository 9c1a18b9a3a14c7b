"""Train implicit's ALS on CPU into an :class:`~fallback_mf.model.AlsModel`.

Confidence follows Hu, Koren and Volinsky: ``c_ui = 1 + alpha * r_ui``, where ``r_ui`` is the
number of interactions of user u with item i (``confidence="count"``) or the sum of their
ratings (``confidence="rating"``). implicit reads the stored value as the confidence itself, so
the matrix holds ``1 + alpha * r`` and implicit's own ``alpha`` stays 1.
"""

from __future__ import annotations

import logging
import os
import time
from importlib import metadata as importlib_metadata
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cascade.recommenders import PopularityRecommender, UserItems
from cascade.runtime.schema import ITEM_ID, RATING, USER_ID
from fallback_mf.model import AlsModel

logger = logging.getLogger(__name__)

Confidence = Literal["count", "rating"]

# Defaults tuned on the demo data set (see README: ALS vs popularity).
DEFAULT_FACTORS = 64
DEFAULT_REGULARIZATION = 0.05
DEFAULT_ALPHA = 3.0
DEFAULT_ITERATIONS = 15


def default_threads() -> int:
    """CPUs this process may use (affinity-aware)."""
    return max(1, len(os.sched_getaffinity(0)))


def interaction_matrix(
    interactions: pd.DataFrame, *, confidence: Confidence = "count"
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """``(r_ui as CSR float32 users x items, user_ids, item_ids)``; duplicates summed, ids sorted."""
    if confidence not in ("count", "rating"):
        raise ValueError(f"confidence must be 'count' or 'rating', got {confidence!r}")
    if interactions.empty:
        raise ValueError("no interactions to train on")
    user_ids, u_idx = np.unique(interactions[USER_ID].to_numpy(np.int64), return_inverse=True)
    item_ids, i_idx = np.unique(interactions[ITEM_ID].to_numpy(np.int64), return_inverse=True)
    if confidence == "rating":
        if RATING not in interactions:
            raise ValueError("confidence='rating' needs a rating column")
        values = interactions[RATING].to_numpy(np.float32)
        if not np.isfinite(values).all() or (values <= 0).any():
            raise ValueError("confidence='rating' needs finite, positive ratings")
    else:
        values = np.ones(len(interactions), dtype=np.float32)
    matrix = sp.csr_matrix(
        (values, (u_idx, i_idx)), shape=(len(user_ids), len(item_ids)), dtype=np.float32
    )
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix, user_ids, item_ids


def train_als(
    *,
    interactions: pd.DataFrame,
    factors: int = DEFAULT_FACTORS,
    regularization: float = DEFAULT_REGULARIZATION,
    alpha: float = DEFAULT_ALPHA,
    iterations: int = DEFAULT_ITERATIONS,
    confidence: Confidence = "count",
    threads: int | None = None,
    seed: int = 42,
    progress: bool = True,
) -> AlsModel:
    """Fit ALS on ``interactions`` (columns of :mod:`cascade.runtime.schema`) and return the model.

    ``threads`` bounds implicit's worker threads (default: the CPUs this process may use); BLAS is
    held at one thread during the fit, as implicit recommends. The progress bar is implicit's
    (tqdm). Deterministic for a given ``seed``.
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    if factors < 1 or iterations < 1:
        raise ValueError("factors and iterations must be >= 1")
    if regularization < 0 or alpha < 0:
        raise ValueError("regularization and alpha must be >= 0")
    threads = default_threads() if threads is None or threads < 1 else threads
    matrix, user_ids, item_ids = interaction_matrix(interactions, confidence=confidence)
    weighted = matrix.copy()
    weighted.data = 1.0 + np.float32(alpha) * weighted.data
    logger.info(
        "training ALS: %d users x %d items, %d pairs, factors=%d iterations=%d threads=%d",
        matrix.shape[0],
        matrix.shape[1],
        matrix.nnz,
        factors,
        iterations,
        threads,
    )
    started = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        als = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=1.0,
            dtype=np.float32,
            iterations=iterations,
            num_threads=threads,
            random_state=seed,
        )
        als.fit(weighted, show_progress=progress)
    seconds = time.perf_counter() - started
    logger.info("ALS trained in %.1f s", seconds)

    seen = UserItems(
        user_ids=user_ids,
        indptr=matrix.indptr.astype(np.int64),
        indices=matrix.indices.astype(np.int64),
    )
    popular = PopularityRecommender.from_interactions(interactions, with_seen=False)
    params: dict[str, Any] = {
        "factors": factors,
        "regularization": regularization,
        "alpha": alpha,
        "iterations": iterations,
        "confidence": confidence,
        "threads": threads,
        "seed": seed,
    }
    meta: dict[str, Any] = {
        "params": params,
        "train_seconds": round(seconds, 3),
        "libraries": {
            "implicit": importlib_metadata.version("implicit"),
            "numpy": np.__version__,
        },
        "n_interactions": len(interactions),
    }
    return AlsModel(
        user_factors=np.ascontiguousarray(als.user_factors, dtype=np.float32),
        item_factors=np.ascontiguousarray(als.item_factors, dtype=np.float32),
        user_ids=user_ids,
        item_ids=item_ids,
        seen=seen,
        popular=popular,
        metadata=meta,
    )
