"""From a data set to a saved Two-Tower artifact: rows, vocabularies, validation, training, metrics.

``run_train_two_tower`` is what ``cascade train two-tower`` (and ``torchrun -m two_tower.ddp``)
calls. Steps:

1. the training side of the evaluation split (``cascade.evaluation.model_data.prepare_data``, the
   same split ALS and ``cascade evaluate`` use), or every interaction with ``split=None``;
2. a validation hold-out (``two_tower.validation.validation_split``): for a seeded sample of users
   (``val_fraction``, at most ``val_max_users``, at least 2,000 or all eligible users when
   fewer), their latest interactions (the same temporal rule) are held out; the rest is the fit
   set, so the final model still learns from about 98% of the training rows;
3. training rows for the fit interactions (``two_tower.training_frames.feast_training_rows``):
   profile and item features by Feast's point-in-time join (``cascade.features.training.
   training_frame``, feature service ``two_tower_v1``), the user's history at the exact event
   time from the fit interactions themselves (``cascade.data.history.EventHistory``); the share
   of rows with an empty history is logged (a WARNING above half) and saved in the metadata;
   encoded with their vocabularies by ``two_tower.prepare.prepare``;
4. training with early stopping on validation Recall@20 (``patience`` epochs without a gain,
   up to ``epochs``; the best epoch's weights are kept), then item embeddings over the catalogue
   with features as of the end of the training data; training seconds and the process's peak
   memory are saved in the metadata;
5. the same metrics as ALS on the test side (``two_tower.validation.holdout_metrics``), saved in
   ``metadata.json``.

``train_in_memory`` runs steps 2 to 4 without Feast, for tests and the benchmark.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from cascade.data.dataset import item_category_names, read_side_tables
from cascade.evaluation.model_data import prepare_data
from cascade.evaluation.split import SplitParams
from cascade.recommenders import PopularityRecommender
from cascade.runtime.paths import Layout
from cascade.runtime.schema import ITEM_ID, TIMESTAMP, USER_ID
from two_tower import feature_settings
from two_tower.artifacts import TrainedTwoTower, save_two_tower
from two_tower.data import item_catalogue, item_rows
from two_tower.item_neighbours import GAMMA_GRID, NeighbourTerm, build_neighbours
from two_tower.item_neighbours import metadata as neighbour_metadata
from two_tower.item_prior import BETA_GRID, WINDOW_DAYS, choose_beta, item_bias, recent_counts
from two_tower.model import TowerEnsemble, TwoTower
from two_tower.prepare import Prepared, build_model, prepare
from two_tower.recommender import item_vectors
from two_tower.train import (
    FitHooks,
    FitResult,
    TrainParams,
    configure_determinism,
    fit,
    resolve_device,
)
from two_tower.training_frames import (
    feast_training_rows,
    frame_from_interactions,
    report_empty_history,
)
from two_tower.validation import holdout_metrics, validation_split

logger = logging.getLogger(__name__)

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_VAL_MAX_USERS = 2_000


def load_inputs(
    *,
    layout: Layout,
    spec: str,
    split: SplitParams | None,
    engine: str,
    val_fraction: float,
    val_max_users: int,
    seed: int,
    seen_len: int,
) -> tuple[Any, pd.DataFrame, pd.DataFrame, pd.DataFrame, Prepared]:
    """``(ModelData, test, users, items, Prepared)`` for ``spec``."""
    data, test = prepare_data(layout=layout, spec=spec, split=split)
    assert data.directory is not None
    users, items = read_side_tables(data.directory)  # the interactions are in data already
    fit, val_fit, val_target = validation_split(
        data.train, fraction=val_fraction, max_users=val_max_users, seed=seed, split=split
    )
    started = time.perf_counter()
    rows = feast_training_rows(layout=layout, dataset=data.name, interactions=fit, engine=engine)
    report_empty_history(rows.history)
    prepared = prepare(
        frame=rows.frame,
        history=rows.history,
        fit=fit,
        users=users,
        items=items,
        val_fit=val_fit,
        val_target=val_target,
        seen_len=seen_len,
    )
    logger.info(
        "two_tower data: %d training rows (built in %.1f s), %d users, %d items, "
        "%d validation users",
        len(prepared.training),
        time.perf_counter() - started,
        len(prepared.user_vocab),
        len(prepared.item_vocab),
        val_target[USER_ID].nunique(),
    )
    return data, test, users, items, prepared


def run_train_two_tower(
    *,
    layout: Layout,
    spec: str,
    split: SplitParams | None,
    params: TrainParams,
    engine: str = "asof",
    val_fraction: float = DEFAULT_VAL_FRACTION,
    val_max_users: int = DEFAULT_VAL_MAX_USERS,
    evaluate_test: bool = True,
    hooks: FitHooks | None = None,
) -> Path | None:
    """Train on ``spec`` (train side of ``split``, or all data when None), save, return the folder.

    Under DDP (``hooks``) only the main process evaluates and saves; the others return None.
    """
    data, test, users, items, prepared = load_inputs(
        layout=layout,
        spec=spec,
        split=split,
        engine=engine,
        val_fraction=val_fraction,
        val_max_users=val_max_users,
        seed=params.seed,
        seen_len=max(params.seen_pool, 1),
    )
    device = resolve_device(params.device)
    configure_determinism(params.seed, device, params.threads)
    model = build_model(prepared, params).to(device)
    results = fit_members(model, prepared, params=params, hooks=hooks)
    if hooks is not None and not hooks.is_main:
        return None
    trained = finish(model.cpu(), prepared, train=data.train, items=items)
    trained.metadata.update(
        {
            "data": data.data_metadata(),
            "prior": fit_prior(trained, prepared, train=data.train),
            "params": params.to_dict(),
            "engine": engine,
            "training_set": training_set_summary(prepared),
            feature_settings.KEY: feature_settings.current(),
            "history": [r.history for r in results],  # one list of epochs per member
            "best_epoch": [r.best_epoch for r in results],
            "train_seconds": round(sum(r.seconds for r in results), 2),
            "samples_per_second": round(
                sum(r.samples_per_second for r in results) / len(results), 1
            ),
            "device": str(device),
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    if evaluate_test and split is not None and len(test):
        trained.metadata["metrics"] = holdout_metrics(
            trained, train=data.train, test=test, users=users
        )
    return save_two_tower(trained, artifacts_dir=layout.artifacts_dir)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB (data, training set and model)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def training_set_summary(prepared: Prepared) -> dict[str, Any]:
    """What the metadata records about the training rows (``cascade train`` prints it)."""
    return {
        "rows": len(prepared.training),
        "user_history": feature_settings.USER_HISTORY,
        "empty_history_share": round(prepared.empty_history_share, 4),
    }


def fit_members(
    model: TwoTower | TowerEnsemble,
    prepared: Prepared,
    *,
    params: TrainParams,
    hooks: FitHooks | None = None,
) -> list[FitResult]:
    """Train each member in turn, member ``i`` with seed ``params.seed + i`` (its own batch
    order); early stopping keeps each member's best epoch."""
    members = list(model.members) if isinstance(model, TowerEnsemble) else [model]
    results = []
    for i, member in enumerate(members):
        if len(members) > 1:
            logger.info("two_tower: training member %d of %d", i + 1, len(members))
        results.append(
            fit(
                cast(TwoTower, member),
                prepared.training,
                params=replace(params, seed=params.seed + i),
                catalogue=prepared.catalogue,
                validate=prepared.validate,
                hooks=hooks,
            )
        )
    return results


def finish(
    model: TwoTower | TowerEnsemble, prepared: Prepared, *, train: pd.DataFrame, items: pd.DataFrame
) -> Any:
    """A ``TrainedTwoTower``: item embeddings with features as of the end of ``train``."""
    catalogue = item_rows(item_catalogue(items, train, prepared.item_vocab), prepared.categories)
    popular = PopularityRecommender.from_interactions(train, with_seen=False)
    return TrainedTwoTower(
        model=model,
        user_vocab=prepared.user_vocab,
        item_vocab=prepared.item_vocab,
        country_vocab=prepared.country_vocab,
        countries=prepared.countries,
        categories=prepared.categories,
        item_embeddings=item_vectors(model, catalogue),
        popular_items=popular.items,
        popular_counts=popular.counts,
        item_categories=item_category_names(items, prepared.item_vocab),
    )


def fit_prior(trained: Any, prepared: Prepared, *, train: pd.DataFrame) -> dict[str, Any]:
    """Choose the recent-popularity prior's beta and the item-neighbour term's gamma together on
    validation (``two_tower.item_prior``, ``two_tower.item_neighbours``; both grids hold 0), and
    set ``trained.item_bias`` / ``trained.neighbours`` from the whole training data (None when 0);
    returns what ``metadata.json`` records (``prior``; ``neighbours`` is set in the metadata)."""
    validate = prepared.validate
    if validate is None or prepared.recent_counts is None:
        trained.metadata["neighbours"] = {"gamma": 0.0, "why": "no validation hold-out"}
        return {"beta": 0.0, "window_days": WINDOW_DAYS, "why": "no validation hold-out"}
    terms = {
        gamma: None
        if not gamma or prepared.neighbours is None
        else NeighbourTerm(prepared.item_vocab, prepared.neighbours, gamma)
        for gamma in GAMMA_GRID
    }
    recalls: dict[tuple[float, float], float] = {}
    for gamma, term in terms.items():

        def with_term(bias: np.ndarray | None, term: NeighbourTerm | None = term) -> float:
            return validate(trained.model, bias, term)

        _, by_beta = choose_beta(with_term, prepared.recent_counts)
        recalls.update({(float(beta), gamma): recall for beta, recall in by_beta.items()})
    beta, gamma = max(recalls, key=lambda bg: (recalls[bg], -bg[1], -bg[0]))
    logger.info(
        "two_tower prior and neighbour term: beta %s, gamma %s chosen on validation Recall@20 "
        "%.5f (beta 0, gamma 0: %.5f)",
        beta,
        gamma,
        recalls[(beta, gamma)],
        recalls[(0.0, 0.0)],
    )
    if beta:
        trained.item_bias = item_bias(recent_counts(train, trained.item_vocab), beta)
    if gamma:
        trained.neighbours = build_neighbours(train, trained.item_vocab)
        trained.neighbour_gamma = gamma
    trained.metadata["neighbours"] = neighbour_metadata(
        gamma, {str(g): recalls[(beta, g)] for g in GAMMA_GRID}
    )
    by_beta_at_gamma = {str(b): recalls[(b, gamma)] for b in BETA_GRID}
    return {"beta": beta, "window_days": WINDOW_DAYS, "validation_recall@20": by_beta_at_gamma}


def _placeholder_tables(interactions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users and items tables with missing side features, for data without them."""
    users = pd.DataFrame({USER_ID: np.unique(interactions[USER_ID].to_numpy(np.int64))})
    users["age_bucket"], users["country"] = -1, None
    items = pd.DataFrame({ITEM_ID: np.unique(interactions[ITEM_ID].to_numpy(np.int64))})
    items["category"], items["price_bucket"] = None, -1
    items["release_date"] = pd.Timestamp(interactions[TIMESTAMP].min())
    return users, items


def train_in_memory(
    interactions: pd.DataFrame,
    *,
    params: TrainParams,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    val_fraction: float = 0.0,
    hooks: FitHooks | None = None,
) -> Any:
    """Train on ``interactions`` without Feast (rows from :func:`frame_from_interactions`).

    Returns a ``TrainedTwoTower`` (not saved). Used by tests and the benchmark.
    """
    default_users, default_items = _placeholder_tables(interactions)
    users = users if users is not None else default_users
    items = items if items is not None else default_items
    fit_df, val_fit, val_target = validation_split(
        interactions, fraction=val_fraction, max_users=DEFAULT_VAL_MAX_USERS, seed=params.seed
    )
    rows = frame_from_interactions(fit_df, users=users, items=items)
    report_empty_history(rows.history)
    prepared = prepare(
        frame=rows.frame,
        history=rows.history,
        fit=fit_df,
        users=users,
        items=items,
        val_fit=val_fit,
        val_target=val_target,
        seen_len=max(params.seen_pool, 1),
    )
    device = resolve_device(params.device)
    configure_determinism(params.seed, device, params.threads)
    model = build_model(prepared, params).to(device)
    results = fit_members(model, prepared, params=params, hooks=hooks)
    trained = finish(model.cpu(), prepared, train=interactions, items=items)
    trained.metadata.update(
        {
            "prior": fit_prior(trained, prepared, train=interactions),
            "params": params.to_dict(),
            "training_set": training_set_summary(prepared),
            feature_settings.KEY: feature_settings.current(),
            "history": [r.history for r in results],
            "best_epoch": [r.best_epoch for r in results],
            "samples_per_second": sum(r.samples_per_second for r in results) / len(results),
            "train_seconds": sum(r.seconds for r in results),
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    return trained
