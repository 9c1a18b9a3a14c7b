"""Held-out quality of a Two-Tower: the validation hold-out with its early-stopping callback, and
the test metrics saved in ``metadata.json`` (the same code as ``cascade evaluate``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from cascade.data.features import user_state
from cascade.evaluation.metrics import HEADLINE, evaluate_recommender, ground_truth
from cascade.evaluation.report import evaluate
from cascade.evaluation.split import SplitParams, temporal_split
from cascade.recommenders import PopularityRecommender
from cascade.runtime.schema import USER_ID
from two_tower.data import ItemRows, user_table
from two_tower.item_neighbours import NeighbourTerm
from two_tower.model import TwoTower
from two_tower.recommender import TwoTowerRecommender, item_vectors

EVAL_MAX_USERS = 20_000
VAL_MIN_USERS = 2_000  # validation users at least (all eligible users when fewer)


def validation_split(
    train: pd.DataFrame,
    *,
    fraction: float,
    max_users: int,
    seed: int,
    split: SplitParams | None = None,
    min_users: int = VAL_MIN_USERS,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(fit, val_fit, val_target)``: sampled users' latest interactions held out of ``fit``.

    The sample is ``fraction`` of the eligible users, at most ``max_users`` but at least
    ``min_users`` (all eligible users when fewer): early stopping on ~100 users picks an epoch
    by noise (issue 14). ``fraction <= 0`` turns validation off. ``val_fit`` is the sampled
    users' part of ``fit`` (their history for validation).
    """
    split = split or SplitParams()
    counts = train[USER_ID].value_counts()
    eligible = np.sort(counts.index[counts >= split.min_interactions].to_numpy(np.int64))
    wanted = max(min_users, min(max_users, math.ceil(fraction * len(eligible))))
    n = min(len(eligible), wanted)
    if n == 0 or fraction <= 0:
        empty = train.iloc[0:0]
        return train, empty, empty
    chosen = np.random.default_rng(seed).choice(eligible, size=n, replace=False)
    mask = train[USER_ID].isin(chosen).to_numpy()
    val_fit, val_target = temporal_split(
        train.loc[mask], test_fraction=split.test_fraction, min_interactions=split.min_interactions
    )
    fit = pd.concat([train.loc[~mask], val_fit], ignore_index=True)
    return fit, val_fit, val_target


def recall_validator(
    *,
    item_vocab: np.ndarray,
    catalogue: ItemRows,
    users: pd.DataFrame,
    val_fit: pd.DataFrame,
    val_target: pd.DataFrame,
    fit: pd.DataFrame,
) -> Callable[..., float]:
    """The early-stopping callback: a model's Recall@20 on the held-out ``val_target``, the
    catalogue's items (``item_vocab``, features in ``catalogue``) as candidates; ``item_bias``
    (``two_tower.item_prior``) and ``neighbour_term`` (``two_tower.item_neighbours``) added to
    the scores when given."""
    truth = ground_truth(val_fit, val_target)
    state = user_table(users, user_state(val_fit))
    popular = PopularityRecommender.from_interactions(fit, with_seen=False)

    def validate(
        model: TwoTower,
        item_bias: np.ndarray | None = None,
        neighbour_term: NeighbourTerm | None = None,
    ) -> float:
        rec = TwoTowerRecommender(
            model=model,
            item_ids=item_vocab,
            item_embeddings=item_vectors(model, catalogue),
            users=state,
            seen=truth.train_items,
            popular=popular,
            item_bias=item_bias,
            neighbour_term=neighbour_term,
        )
        return float(evaluate_recommender(rec, truth, max_k=20)["recall@20"])

    return validate


def holdout_metrics(
    trained: Any, *, train: pd.DataFrame, test: pd.DataFrame, users: pd.DataFrame | None
) -> dict[str, Any]:
    """Headline metrics of popularity and this model on ``test`` (same code as ``cascade evaluate``)."""
    rec = TwoTowerRecommender.from_trained(trained, interactions=train, users=users)
    report = evaluate(
        [PopularityRecommender.from_interactions(train), rec], train, test, max_users=EVAL_MAX_USERS
    )
    metrics: dict[str, Any] = {
        name: {k: m[k] for k in HEADLINE} for name, m in report.models.items()
    }
    metrics["users_evaluated"] = report.users_evaluated
    return metrics
