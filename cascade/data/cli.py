"""``cascade data``: build a data set folder (parquet tables plus Feast feature sources)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from cascade.data.errors import DataSourceError
from cascade.data.profiles import Profile


def data(
    source: str = typer.Option(
        "synthetic:demo",
        "--source",
        "-s",
        help="synthetic:tiny|demo|large, movielens:PATH (folder or ratings file), or csv:PATH "
        "(header user_id,item_id,timestamp[,rating]).",
    ),
    seed: int = typer.Option(42, "--seed", help="Seed of the synthetic generator."),
    profile: Annotated[
        Profile | None,
        typer.Option(
            "--profile",
            help="Synthetic data only: sessions (default: bursts, item-to-item transitions, "
            "popularity drift) or uniform (independent draws at uniform times, the old "
            "generator).",
            show_default=False,
        ),
    ] = None,
    name: str | None = typer.Option(
        None, "--name", help="Folder name under CASCADE_HOME/datasets."
    ),
    positive_threshold: float | None = typer.Option(
        None, "--positive-threshold", help="Keep only interactions with rating >= this."
    ),
    snapshot_days: float | None = typer.Option(
        None,
        "--snapshot-days",
        help="Days between user-activity snapshots (default 7; 30 above 5M interactions); training rows use event-time history whatever the period.",
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the folder is up to date."),
    event_log: bool = typer.Option(
        True,
        "--event-log/--no-event-log",
        help="Fold the feedback events the consumer logged since the last build into the "
        "interactions (a new log file makes the data set out of date).",
    ),
) -> None:
    """Build a data set (interactions, users, items) and its offline feature tables."""
    from cascade.data.dataset import read_manifest
    from cascade.data.resolve import resolve_dataset
    from cascade.runtime.paths import Layout

    if snapshot_days is not None and snapshot_days <= 0:
        raise typer.BadParameter("must be positive", param_hint="--snapshot-days")
    try:
        directory = resolve_dataset(
            source,
            layout=Layout.from_env(),
            positive_threshold=positive_threshold,
            seed=seed,
            name=name,
            snapshot_every=timedelta(days=snapshot_days) if snapshot_days else None,
            force=force,
            profile=profile,
            fold_event_log=event_log,
        )
    except DataSourceError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from None
    manifest = read_manifest(directory)
    rows = manifest["rows"]
    drawn = f" ({manifest['profile']})" if manifest.get("profile") else ""
    typer.echo(
        f"data set {directory.name}{drawn}: {rows['users']:,} users, {rows['items']:,} items, "
        f"{rows['interactions']:,} interactions -> {directory}"
    )
