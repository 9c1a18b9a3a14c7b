"""From training rows to what the training loop needs (:class:`Prepared`): vocabularies, encoded
rows, the item catalogue, the validation callback; and the network sized for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cascade.data.history import EventHistory
from cascade.runtime.schema import ITEM_ID, USER_ID
from two_tower.data import (
    ItemRows,
    TrainingSet,
    country_codes,
    item_catalogue,
    item_rows,
    training_set,
)
from two_tower.item_neighbours import ItemNeighbours, build_neighbours
from two_tower.item_prior import recent_counts
from two_tower.model import TowerEnsemble, TwoTower, build_two_tower
from two_tower.towers import StringVocab, TwoTowerConfig
from two_tower.train import TrainParams
from two_tower.validation import recall_validator


@dataclass
class Prepared:
    """Everything the training loop needs, built from one data set."""

    training: TrainingSet
    catalogue: ItemRows  # fit-time item features: uniform negatives and validation
    user_vocab: np.ndarray
    item_vocab: np.ndarray
    country_vocab: np.ndarray
    countries: list[str]
    categories: StringVocab
    n_age_buckets: int
    n_price_buckets: int
    validate: Callable[..., float] | None  # (model, item_bias, neighbour_term) -> val. Recall@20
    seen_len: int = 1
    empty_history_share: float = 0.0  # training rows whose user had no earlier interaction
    recent_counts: np.ndarray | None = None  # per item_vocab item, from the fit interactions
    neighbours: ItemNeighbours | None = None  # item_vocab order, from the fit interactions


def prepare(
    *,
    frame: pd.DataFrame,
    history: EventHistory,
    fit: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    val_fit: pd.DataFrame,
    val_target: pd.DataFrame,
    seen_len: int,
) -> Prepared:
    """Vocabularies, encoded training rows and the validation callback.

    ``frame`` and ``history``: the training rows (``two_tower.training_frames.TrainingRows``).
    """
    categories = StringVocab(items["category"].dropna().astype(str))
    user_vocab = np.unique(fit[USER_ID].to_numpy(np.int64))
    item_vocab = np.unique(fit[ITEM_ID].to_numpy(np.int64))
    country_strings = sorted({str(c) for c in users["country"].dropna()})
    codes = country_codes(country_strings)
    order = np.argsort(codes)
    codes, country_strings = codes[order], [country_strings[i] for i in order]
    keep = codes > 0
    catalogue = item_rows(item_catalogue(items, fit, item_vocab), categories)
    prepared = Prepared(
        training=training_set(frame, history, categories, seen_len=seen_len),
        catalogue=catalogue,
        user_vocab=user_vocab,
        item_vocab=item_vocab,
        country_vocab=codes[keep],
        countries=[c for c, k in zip(country_strings, keep, strict=True) if k],
        categories=categories,
        n_age_buckets=int(max(users["age_bucket"].max(), 0)) + 2,
        n_price_buckets=int(max(items["price_bucket"].max(), 0)) + 2,
        validate=None,
        seen_len=seen_len,
        empty_history_share=history.empty_share(),
        recent_counts=recent_counts(fit, item_vocab),
        neighbours=build_neighbours(fit, item_vocab) if len(val_target) else None,
    )
    if len(val_target):
        prepared.validate = recall_validator(
            item_vocab=prepared.item_vocab,
            catalogue=prepared.catalogue,
            users=users,
            val_fit=val_fit,
            val_target=val_target,
            fit=fit,
        )
    return prepared


def build_model(prepared: Prepared, params: TrainParams) -> TwoTower | TowerEnsemble:
    """A freshly initialised network sized for ``prepared`` (seed it first)."""
    cfg = TwoTowerConfig(
        n_users=len(prepared.user_vocab) + 1,
        n_items=len(prepared.item_vocab) + 1,
        n_age_buckets=prepared.n_age_buckets,
        n_countries=len(prepared.country_vocab) + 1,
        n_categories=len(prepared.categories),
        n_price_buckets=prepared.n_price_buckets,
        dim=params.dim,
        hidden=params.hidden,
        side_dim=params.side_dim,
        seen_pool=params.seen_pool,
        seen_attention=int(params.seen_attention),
        seq_layers=params.seq_layers,
        heads=params.heads,
        user_id_embedding=int(params.user_id_embedding),
        members=params.members,
    )
    return build_two_tower(
        cfg,
        user_vocab=prepared.user_vocab,
        item_vocab=prepared.item_vocab,
        country_vocab=prepared.country_vocab,
    )
