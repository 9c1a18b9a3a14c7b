"""Ranking primitives every process may use (numpy only).

The popularity ranking itself is computed once, at training time
(``cascade.recommenders.PopularityRecommender.from_interactions``: interaction count, then item
id) and stored in the ALS artifact as ``popular_items.npy``; the MF service and the gateway's
popular tier only *read* that ranking and take its head with :func:`first_not_in`.
"""

from __future__ import annotations

import numpy as np


def first_not_in(ranked: np.ndarray, skip: np.ndarray, k: int) -> np.ndarray:
    """Positions in ``ranked`` of its first ``k`` entries not in ``skip`` (fewer if it runs out).

    Only the first ``k + len(skip)`` entries are looked at: at most ``len(skip)`` of them can be
    skipped, so the cost does not grow with the catalogue.
    """
    head = min(len(ranked), k + len(skip))
    return np.flatnonzero(~np.isin(ranked[:head], skip))[:k]
