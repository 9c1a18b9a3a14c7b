"""``cascade train mf``: train ALS on a data set and save a versioned artifact.

By default ALS trains on the train side of the evaluation split, so ``cascade evaluate`` can
use the artifact honestly (the test interactions were never seen); the metrics on the test side
go into ``metadata.json``. ``--full-data`` trains on every interaction: that is the artifact to
serve. Either way the new version becomes ``latest``, which the MF service loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

from cascade.evaluation.split import DEFAULT_MIN_INTERACTIONS, DEFAULT_TEST_FRACTION, SplitParams
from cascade.runtime.paths import Layout
from fallback_mf.train import (
    DEFAULT_ALPHA,
    DEFAULT_FACTORS,
    DEFAULT_ITERATIONS,
    DEFAULT_REGULARIZATION,
    Confidence,
)

logger = logging.getLogger(__name__)

EVAL_MAX_USERS = 20_000  # users sampled for the metrics recorded in metadata


def run_train_mf(
    *,
    layout: Layout,
    spec: str,
    split: SplitParams | None,
    factors: int = DEFAULT_FACTORS,
    regularization: float = DEFAULT_REGULARIZATION,
    alpha: float = DEFAULT_ALPHA,
    iterations: int = DEFAULT_ITERATIONS,
    confidence: Confidence = "count",
    threads: int | None = None,
    seed: int = 42,
    progress: bool = True,
) -> Path:
    """Train on ``spec`` (train side of ``split``, or all data when None), save, return the folder."""
    from cascade.evaluation.model_data import prepare_data
    from fallback_mf.artifacts import save_als
    from fallback_mf.train import train_als

    data, test = prepare_data(layout=layout, spec=spec, split=split)
    model = train_als(
        interactions=data.train,
        factors=factors,
        regularization=regularization,
        alpha=alpha,
        iterations=iterations,
        confidence=confidence,
        threads=threads,
        seed=seed,
        progress=progress,
    )
    if data.directory is not None:  # each item's category, for the serving tiers' filters
        from cascade.data.dataset import item_category_names, read_side_tables

        _, items = read_side_tables(data.directory)
        model.item_categories = item_category_names(items, model.item_ids)
    metrics: dict[str, Any] = {}
    if split is not None and len(test):
        from cascade.evaluation.metrics import HEADLINE
        from cascade.evaluation.report import evaluate
        from cascade.recommenders import PopularityRecommender

        popular = PopularityRecommender.from_interactions(data.train)
        report = evaluate([popular, model], data.train, test, max_users=EVAL_MAX_USERS)
        metrics = {name: {k: m[k] for k in HEADLINE} for name, m in report.models.items()}
        metrics["users_evaluated"] = report.users_evaluated
    return save_als(
        model,
        artifacts_dir=layout.artifacts_dir,
        extra_metadata={"data": data.data_metadata(), "metrics": metrics},
    )


def train_mf(
    data: str = typer.Option(
        "demo",
        "--data",
        "-d",
        envvar="CASCADE_DATASET",
        help="Data set name or spec: demo, synthetic:demo, movielens:PATH, csv:PATH.",
    ),
    factors: int = typer.Option(DEFAULT_FACTORS, min=1, help="Latent factors."),
    regularization: float = typer.Option(
        DEFAULT_REGULARIZATION, min=0.0, help="L2 regularization."
    ),
    alpha: float = typer.Option(
        DEFAULT_ALPHA,
        min=0.0,
        help="Confidence c = 1 + alpha * r (Hu et al.). implicit's own alpha means c = alpha * r:"
        " on 0/1 data its alpha A is --alpha A-1 here.",
    ),
    iterations: int = typer.Option(DEFAULT_ITERATIONS, min=1, help="ALS sweeps."),
    confidence: str = typer.Option(
        "count", help="r from interaction counts ('count') or summed ratings ('rating')."
    ),
    threads: int = typer.Option(0, min=0, help="Worker threads; 0: the CPUs this process may use."),
    full_data: bool = typer.Option(
        False,
        "--full-data/--train-split",
        help="Train on all interactions (the artifact to serve) or on the evaluation train split (default).",
    ),
    test_fraction: float = typer.Option(
        DEFAULT_TEST_FRACTION, help="Split: share of each user's latest interactions held out."
    ),
    min_interactions: int = typer.Option(
        DEFAULT_MIN_INTERACTIONS, help="Split: users with fewer stay wholly in train."
    ),
    seed: int = typer.Option(42, help="Seed of the factor initialisation."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train the ALS fallback model (implicit, CPU) and save a versioned artifact as `latest`."""
    from cascade.data.dataset import DatasetNotFoundError
    from cascade.data.errors import DataSourceError

    if confidence not in ("count", "rating"):
        raise typer.BadParameter("choose count or rating", param_hint="--confidence")
    try:
        split = (
            None
            if full_data
            else SplitParams(test_fraction=test_fraction, min_interactions=min_interactions)
        )
        directory = run_train_mf(
            layout=Layout.from_env(),
            spec=data,
            split=split,
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            confidence=confidence,  # type: ignore[arg-type]
            threads=threads or None,
            seed=seed,
            progress=progress,
        )
    except (DataSourceError, DatasetNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    from fallback_mf.artifacts import read_metadata

    meta = read_metadata(directory)
    typer.echo(f"saved ALS artifact {directory} ({'full data' if full_data else 'train split'})")
    metrics = meta.get("metrics") or {}
    if "als" in metrics and "popular" in metrics:
        als, pop = metrics["als"]["recall@20"], metrics["popular"]["recall@20"]
        typer.echo(f"test split Recall@20: als {als:.4f}, popular {pop:.4f}")
