"""From a data set to a saved Two-Tower artifact: rows, vocabularies, validation, training, metrics.

``run_train_two_tower`` is what ``cascade train two-tower`` (and ``torchrun -m two_tower.ddp``)
calls. Steps:

1. the training side of the evaluation split (``cascade.evaluation.model_data.prepare_data``, the
   same split ALS and ``cascade evaluate`` use), or every interaction with ``split=None``;
2. a validation hold-out: for a seeded sample of users (``val_fraction``, at most
   ``val_max_users``), their latest interactions (the same temporal rule) are held out; the rest
   is the fit set, so the final model still learns from about 98% of the training rows;
3. point-in-time training rows for the fit interactions from the Feast offline store
   (``cascade.features.training.training_frame``, feature service ``two_tower_v1``);
4. training with early stopping on validation Recall@20, then item embeddings over the
   catalogue with features as of the end of the training data;
5. the same metrics as ALS on the test side, saved in ``metadata.json``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from cascade.evaluation.split import SplitParams
from cascade.runtime.paths import Layout
from cascade.runtime.schema import ITEM_ID, TIMESTAMP, USER_ID
from two_tower.data import (
    ItemRows,
    TrainingSet,
    item_catalogue,
    item_rows,
    training_set,
    user_table,
)
from two_tower.model import StringVocab, TowerEnsemble, TwoTower, TwoTowerConfig, build_two_tower
from two_tower.train import FitHooks, FitResult, TrainParams, fit

logger = logging.getLogger(__name__)

EVAL_MAX_USERS = 20_000
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_VAL_MAX_USERS = 2_000


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
    validate: Callable[[TwoTower], float] | None
    seen_len: int = 1


def validation_split(
    train: pd.DataFrame,
    *,
    fraction: float,
    max_users: int,
    seed: int,
    split: SplitParams | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(fit, val_fit, val_target)``: sampled users' latest interactions held out of ``fit``.

    ``val_fit`` is the sampled users' part of ``fit`` (their history for validation).
    """
    from cascade.evaluation.split import temporal_split

    split = split or SplitParams()
    counts = train[USER_ID].value_counts()
    eligible = np.sort(counts.index[counts >= split.min_interactions].to_numpy(np.int64))
    n = min(max_users, math.ceil(fraction * len(eligible)))
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


def feast_training_frame(
    *, layout: Layout, dataset: str, interactions: pd.DataFrame, engine: str
) -> pd.DataFrame:
    """Point-in-time rows of feature service ``two_tower_v1`` for each interaction."""
    from cascade.features.store import apply
    from cascade.features.training import training_frame
    from cascade.runtime import feature_names as names
    from cascade.runtime.feature_store import open_store

    store = open_store(layout=layout, dataset=dataset)
    try:
        store.get_feature_service(names.TWO_TOWER_SERVICE)
    except Exception:
        logger.info(
            "feature service %s not registered for %s: applying definitions",
            names.TWO_TOWER_SERVICE,
            dataset,
        )
        apply(layout=layout, dataset=dataset)
        store = open_store(layout=layout, dataset=dataset)
    entity = pd.DataFrame(
        {
            USER_ID: interactions[USER_ID].to_numpy(np.int64),
            ITEM_ID: interactions[ITEM_ID].to_numpy(np.int64),
            names.EVENT_TIMESTAMP: interactions[TIMESTAMP].to_numpy(),
        }
    )
    return training_frame(store, entity, feature_service=names.TWO_TOWER_SERVICE, engine=engine)  # type: ignore[arg-type]


def prepare(
    *,
    frame: pd.DataFrame,
    fit: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    val_fit: pd.DataFrame,
    val_target: pd.DataFrame,
    seen_len: int,
) -> Prepared:
    """Vocabularies, encoded training rows and the validation callback."""
    from two_tower.data import country_codes

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
        training=training_set(frame, categories, seen_len=seen_len),
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
    )
    if len(val_target):
        prepared.validate = _validator(
            prepared, users=users, val_fit=val_fit, val_target=val_target, fit=fit
        )
    return prepared


def _validator(
    prepared: Prepared,
    *,
    users: pd.DataFrame,
    val_fit: pd.DataFrame,
    val_target: pd.DataFrame,
    fit: pd.DataFrame,
) -> Callable[[TwoTower], float]:
    from cascade.data.features import user_state
    from cascade.evaluation.metrics import evaluate_recommender, ground_truth
    from cascade.recommenders import PopularityRecommender
    from two_tower.recommender import TwoTowerRecommender, item_vectors

    truth = ground_truth(val_fit, val_target)
    state = user_table(users, user_state(val_fit))
    popular = PopularityRecommender.from_interactions(fit, with_seen=False)

    def validate(model: TwoTower) -> float:
        rec = TwoTowerRecommender(
            model=model,
            item_ids=prepared.item_vocab,
            item_embeddings=item_vectors(model, prepared.catalogue),
            users=state,
            seen=truth.train_items,
            popular=popular,
        )
        return float(evaluate_recommender(rec, truth, max_k=20)["recall@20"])

    return validate


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
        user_id_embedding=int(params.user_id_embedding),
        members=params.members,
    )
    return build_two_tower(
        cfg,
        user_vocab=prepared.user_vocab,
        item_vocab=prepared.item_vocab,
        country_vocab=prepared.country_vocab,
    )


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
    from cascade.data.dataset import read_dataset
    from cascade.evaluation.model_data import prepare_data

    data, test = prepare_data(layout=layout, spec=spec, split=split)
    assert data.directory is not None
    ds = read_dataset(data.directory)
    fit, val_fit, val_target = validation_split(
        data.train, fraction=val_fraction, max_users=val_max_users, seed=seed, split=split
    )
    frame = feast_training_frame(layout=layout, dataset=data.name, interactions=fit, engine=engine)
    prepared = prepare(
        frame=frame,
        fit=fit,
        users=ds.users,
        items=ds.items,
        val_fit=val_fit,
        val_target=val_target,
        seen_len=seen_len,
    )
    logger.info(
        "two_tower data: %d training rows, %d users, %d items, %d validation users",
        len(prepared.training),
        len(prepared.user_vocab),
        len(prepared.item_vocab),
        val_target[USER_ID].nunique(),
    )
    return data, test, ds.users, ds.items, prepared


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
    from two_tower.artifacts import save_two_tower
    from two_tower.train import configure_determinism, resolve_device

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
            "params": params.to_dict(),
            "engine": engine,
            "history": [r.history for r in results],  # one list of epochs per member
            "best_epoch": [r.best_epoch for r in results],
            "train_seconds": round(sum(r.seconds for r in results), 2),
            "samples_per_second": round(
                sum(r.samples_per_second for r in results) / len(results), 1
            ),
            "device": str(device),
        }
    )
    if evaluate_test and split is not None and len(test):
        trained.metadata["metrics"] = holdout_metrics(
            trained, train=data.train, test=test, users=users
        )
    return save_two_tower(trained, artifacts_dir=layout.artifacts_dir)


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
    from cascade.recommenders import PopularityRecommender
    from two_tower.artifacts import TrainedTwoTower
    from two_tower.recommender import item_vectors

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
    )


def holdout_metrics(
    trained: Any, *, train: pd.DataFrame, test: pd.DataFrame, users: pd.DataFrame | None
) -> dict[str, Any]:
    """Headline metrics of popularity and this model on ``test`` (same code as ``cascade evaluate``)."""
    from cascade.evaluation.metrics import HEADLINE
    from cascade.evaluation.report import evaluate
    from cascade.recommenders import PopularityRecommender
    from two_tower.recommender import TwoTowerRecommender

    rec = TwoTowerRecommender.from_trained(trained, interactions=train, users=users)
    report = evaluate(
        [PopularityRecommender.from_interactions(train), rec], train, test, max_users=EVAL_MAX_USERS
    )
    metrics: dict[str, Any] = {
        name: {k: m[k] for k in HEADLINE} for name, m in report.models.items()
    }
    metrics["users_evaluated"] = report.users_evaluated
    return metrics


def frame_from_interactions(
    interactions: pd.DataFrame,
    *,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Training rows computed directly from ``interactions``, exactly as of each event.

    For tests and small in-memory runs (a Python loop over rows): the pipeline itself reads the
    point-in-time rows from Feast. User state = every earlier interaction of the user (same
    rules as ``user_state``), item popularity = earlier interactions with the item.
    """
    from cascade.runtime.schema import MAX_SEEN_ITEMS, RECENT_ITEMS_LEN

    df = interactions.sort_values([TIMESTAMP, USER_ID, ITEM_ID], kind="mergesort").reset_index(
        drop=True
    )
    history: dict[int, list[int]] = {}
    popularity: dict[int, int] = {}
    counts, recent, seen, pop = [], [], [], []
    for user, item in zip(
        df[USER_ID].to_numpy(np.int64), df[ITEM_ID].to_numpy(np.int64), strict=True
    ):
        past = history.setdefault(int(user), [])
        counts.append(len(past))
        newest = past[::-1]
        recent.append(np.asarray(newest[:RECENT_ITEMS_LEN], dtype=np.int64))
        seen.append(np.asarray(list(dict.fromkeys(newest))[:MAX_SEEN_ITEMS], dtype=np.int64))
        pop.append(popularity.get(int(item), 0))
        past.append(int(item))
        popularity[int(item)] = popularity.get(int(item), 0) + 1
    out = df[[USER_ID, ITEM_ID, TIMESTAMP]].copy()
    out["interaction_count"], out["recent_items"], out["seen_items"], out["popularity"] = (
        counts,
        recent,
        seen,
        pop,
    )
    if users is not None:
        out = out.merge(users[[USER_ID, "age_bucket", "country"]], on=USER_ID, how="left")
    else:
        out["age_bucket"], out["country"] = -1, None
    if items is not None:
        out = out.merge(items[[ITEM_ID, "category", "price_bucket"]], on=ITEM_ID, how="left")
    else:
        out["category"], out["price_bucket"] = None, -1
    out["age_days"] = 0.0
    return out


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
    from two_tower.train import configure_determinism, resolve_device

    default_users, default_items = _placeholder_tables(interactions)
    users = users if users is not None else default_users
    items = items if items is not None else default_items
    fit_df, val_fit, val_target = validation_split(
        interactions, fraction=val_fraction, max_users=DEFAULT_VAL_MAX_USERS, seed=params.seed
    )
    frame = frame_from_interactions(fit_df, users=users, items=items)
    prepared = prepare(
        frame=frame,
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
            "params": params.to_dict(),
            "history": [r.history for r in results],
            "best_epoch": [r.best_epoch for r in results],
            "samples_per_second": sum(r.samples_per_second for r in results) / len(results),
            "train_seconds": sum(r.seconds for r in results),
        }
    )
    return trained
