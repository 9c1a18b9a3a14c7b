"""A recent-popularity prior on the Two-Tower's scores: ``score + beta * log(1 + n)``, ``n`` the
item's interactions in the last ``WINDOW_DAYS`` days of the training data.

Why: the item tower sees each item's cumulative popularity and its age, not its trend, and the
in-batch softmax's log-Q correction takes popularity out of the learned scores on purpose. Where
popularity drifts (the demo's does; real catalogues do), what users take next leans to what is
popular now, and a converged tower under-weights it (issue 14: +0.015 Recall@20 on demo with
beta 0.01). ``beta`` is chosen on the validation hold-out from ``BETA_GRID``, 0 included, so data
without drift keep the plain scores; the validation counts come from the fit interactions only
(the held-out events must not vote for themselves).

The prior is one float per item (``item_bias``, item vocabulary order): the offline recommender
adds it to its scores and the export ships it as ``item_bias.npy`` for Triton to add, so offline
evaluation and serving rank alike. Similar items (cosine between item vectors) do not use it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from cascade.runtime.schema import ITEM_ID, TIMESTAMP

WINDOW_DAYS = 30
BETA_GRID = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05)


def recent_counts(
    interactions: pd.DataFrame, item_vocab: np.ndarray, *, window_days: int = WINDOW_DAYS
) -> np.ndarray:
    """Interactions per ``item_vocab`` item in the last ``window_days`` before the newest one."""
    out = np.zeros(len(item_vocab), dtype=np.float64)
    if len(interactions) == 0 or len(item_vocab) == 0:
        return out
    ts = pd.to_datetime(interactions[TIMESTAMP])
    recent = interactions.loc[(ts > ts.max() - pd.Timedelta(days=window_days)).to_numpy()]
    ids, counts = np.unique(recent[ITEM_ID].to_numpy(np.int64), return_counts=True)
    pos = np.searchsorted(item_vocab, ids).clip(max=len(item_vocab) - 1)
    known = item_vocab[pos] == ids
    out[pos[known]] = counts[known]
    return out


def item_bias(counts: np.ndarray, beta: float) -> np.ndarray:
    """``beta * log(1 + counts)`` as float32, the term added to every user's score of the item."""
    return (beta * np.log1p(np.asarray(counts, dtype=np.float64))).astype(np.float32)


def choose_beta(
    validate: Callable[[np.ndarray | None], float], counts: np.ndarray
) -> tuple[float, dict[str, float]]:
    """The ``BETA_GRID`` value with the best validation recall (the smaller on a tie), and each
    value's recall for the record."""
    recalls = {beta: validate(item_bias(counts, beta) if beta else None) for beta in BETA_GRID}
    best = max(BETA_GRID, key=lambda beta: (recalls[beta], -beta))
    return best, {str(beta): round(recall, 5) for beta, recall in recalls.items()}
