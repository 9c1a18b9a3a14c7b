"""``cascade features apply|materialize``: thin Typer shells over ``cascade.features.store``.

Feast is imported inside the command bodies so ``cascade --help`` stays fast.
"""

from __future__ import annotations

from datetime import UTC, datetime

import typer

DATASET_OPTION = typer.Option(
    "demo", "--dataset", envvar="CASCADE_DATASET", help="Data set name under CASCADE_HOME/datasets."
)


def _fail(message: str) -> typer.Exit:
    from cascade.runtime.redact import redact  # an error may quote REDIS_URL: never its password

    typer.echo(f"error: {redact(message)}", err=True)
    return typer.Exit(code=2)


def _parse_end(end: str | None) -> datetime | None:
    if end is None:
        return None
    try:
        parsed = datetime.fromisoformat(end)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{end!r} is not an ISO 8601 date-time", param_hint="--end"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def apply(dataset: str = DATASET_OPTION) -> None:
    """Register the Feast entities, feature views and feature services of a data set."""
    import redis

    from cascade.features import store
    from cascade.runtime import feature_names as names
    from cascade.runtime import feature_store
    from cascade.runtime.paths import Layout

    layout = Layout.from_env()
    try:
        store.apply(layout=layout, dataset=dataset)
    except (feature_store.FeatureStoreError, redis.RedisError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"applied Feast definitions for {dataset!r} (project {names.project_name(dataset)}, "
        f"online store {feature_store.online_store_kind()}, registry "
        f"{feature_store.store_dir(layout=layout, dataset=dataset) / 'registry.db'})"
    )


def materialize(
    dataset: str = DATASET_OPTION,
    full: bool = typer.Option(
        False, "--full", help="Whole range from 1970 (needed after the online store was emptied)."
    ),
    engine: str = typer.Option(
        "auto", "--engine", help="auto, feast (Feast's materialize) or direct (pyarrow, faster)."
    ),
    end: str | None = typer.Option(
        None, "--end", help="End of the range, ISO 8601 (default: now, UTC)."
    ),
) -> None:
    """Copy feature rows into the online store: incremental since the last run, or --full."""
    import redis

    from cascade.features import store
    from cascade.runtime import feature_store
    from cascade.runtime.paths import Layout

    end_at = _parse_end(end)
    if engine not in ("auto", "feast", "direct"):
        raise typer.BadParameter("choose auto, feast or direct", param_hint="--engine")
    try:
        report = store.materialize(
            layout=Layout.from_env(),
            dataset=dataset,
            end=end_at,
            full=full,
            engine=engine,  # type: ignore[arg-type]
        )
    except (feature_store.FeatureStoreError, redis.RedisError) as exc:
        raise _fail(str(exc)) from None
    for view in report.views:
        typer.echo(
            f"  {view.view}: {view.rows} rows in {view.seconds:.2f}s ({view.engine}), "
            f"{view.start:%Y-%m-%d %H:%M} .. {view.end:%Y-%m-%d %H:%M}"
        )
    typer.echo(
        f"materialized {report.rows} rows into {report.online_store} in {report.seconds:.2f}s "
        f"({'full' if full else 'incremental'})"
    )
