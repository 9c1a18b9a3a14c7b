"""``cascade evaluate`` and ``cascade recommend``: thin Typer shells over typed functions."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from cascade.evaluation.split import DEFAULT_MIN_INTERACTIONS, DEFAULT_TEST_FRACTION, SplitParams
from cascade.runtime.paths import Layout

if TYPE_CHECKING:
    from cascade.evaluation.report import Report
    from cascade.recommenders import Recommender

logger = logging.getLogger(__name__)

DEFAULT_MAX_USERS = 20_000
_REQUIRED: Any = ...  # a required option in Annotated form


class UsersFileError(ValueError):
    """The users file of ``cascade recommend`` cannot be read (names the file and line)."""


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or a missing artifact (exit 2), not a bug."""
    from cascade.data.dataset import DatasetNotFoundError
    from cascade.data.errors import DataSourceError
    from cascade.evaluation.model_data import ModelUnavailable
    from fallback_mf.artifacts import ArtifactError

    return (DataSourceError, DatasetNotFoundError, ArtifactError, ModelUnavailable, ValueError)


def run_evaluation(
    *,
    layout: Layout,
    spec: str,
    model_names: list[str],
    split: SplitParams,
    max_users: int | None,
    seed: int = 0,
    train_missing: bool = True,
    versions: dict[str, str] | None = None,
) -> tuple[Report, Path]:
    """Split ``spec``, load each model trained on that split, evaluate, write the report.

    A model without a matching artifact is skipped with its reason (``als`` is trained in memory
    instead when ``train_missing``). ``versions`` pins a model to one artifact version (model
    name -> version folder); a pinned version that is missing or was trained on other data is an
    error, never skipped or replaced. Returns ``(Report, report folder)``.
    """
    from cascade.evaluation.model_data import ModelUnavailable, prepare_data
    from cascade.evaluation.models import load_model
    from cascade.evaluation.report import evaluate as evaluate_models

    versions = versions or {}
    unused = sorted(set(versions) - set(model_names))
    if unused:
        raise ValueError(f"--version names {', '.join(unused)}, not among --models")
    data, test = prepare_data(layout=layout, spec=spec, split=split)
    models: list[Recommender] = []
    skipped: dict[str, str] = {}
    for name in model_names:
        try:
            models.append(
                load_model(
                    name,
                    layout=layout,
                    dataset=data,
                    train_missing=train_missing and name not in versions,
                    version=versions.get(name),
                )
            )
        except ModelUnavailable as exc:
            if name in versions:
                raise
            logger.warning("skipping %s: %s", name, exc)
            skipped[name] = str(exc)
    if not models:
        raise ModelUnavailable(
            "nothing to evaluate: " + "; ".join(f"{n}: {why}" for n, why in skipped.items())
        )
    out_dir = layout.reports_dir / data.name
    report = evaluate_models(
        models,
        data.train,
        test,
        dataset=data.name,
        checksum=data.checksum,
        split=split.to_dict(),
        max_users=max_users,
        seed=seed,
        out_dir=out_dir,
        skipped=skipped,
    )
    return report, out_dir


def parse_versions(values: list[str]) -> dict[str, str]:
    """``MODEL=VERSION`` pairs of ``cascade evaluate --version`` as a dict; ValueError naming the
    bad one (no ``=``, a model without artifacts, a model given twice)."""
    from cascade.evaluation.models import VERSIONED

    out: dict[str, str] = {}
    for value in values:
        name, sep, version = value.partition("=")
        name, version = name.strip(), version.strip()
        if not sep or not version:
            raise ValueError(
                f"--version {value!r}: expected MODEL=VERSION, e.g. als=20261204T135744Z"
            )
        if name not in VERSIONED:
            raise ValueError(f"--version {value!r}: only {', '.join(VERSIONED)} have versions")
        if name in out:
            raise ValueError(f"--version names {name} twice")
        out[name] = version
    return out


def evaluate(
    dataset: str = typer.Option(
        "demo",
        "--dataset",
        "-d",
        envvar="CASCADE_DATASET",
        help="Data set name or spec (demo, movielens:PATH, csv:PATH).",
    ),
    models: str = typer.Option(
        "popular,als,ease,two_tower",
        "--models",
        "-m",
        help="Comma-separated: popular, als, ease, two_tower (one without a model is skipped).",
    ),
    test_fraction: float = typer.Option(
        DEFAULT_TEST_FRACTION, help="Share of each user's latest interactions held out."
    ),
    min_interactions: int = typer.Option(
        DEFAULT_MIN_INTERACTIONS, help="Users with fewer stay wholly in train."
    ),
    max_users: int = typer.Option(
        DEFAULT_MAX_USERS, help="Evaluate at most this many users (seeded sample); 0: all."
    ),
    seed: int = typer.Option(0, help="Seed of the user sample."),
    train_missing: bool = typer.Option(
        True,
        "--train-missing/--no-train-missing",
        help="Train ALS in memory when no artifact matches the split.",
    ),
    version: Annotated[
        list[str] | None,
        typer.Option(
            "--version",
            help="MODEL=VERSION: evaluate that artifact version (its folder name under "
            "artifacts/MODEL/) instead of the newest matching one; repeatable.",
        ),
    ] = None,
) -> None:
    """Evaluate models on a per-user temporal split; write report.json, report.md, recall_at_k.png."""
    from cascade.evaluation.models import MODEL_NAMES

    names = [n.strip() for n in models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODEL_NAMES]
    if not names or unknown:
        raise typer.BadParameter(
            f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)}",
            param_hint="--models",
        )
    try:
        versions = parse_versions(version or [])
        split = SplitParams(test_fraction=test_fraction, min_interactions=min_interactions)
        report, out_dir = run_evaluation(
            layout=Layout.from_env(),
            spec=dataset,
            model_names=names,
            split=split,
            max_users=max_users or None,
            seed=seed,
            train_missing=train_missing,
            versions=versions,
        )
    except _expected_errors() as exc:
        raise _fail(str(exc)) from None
    typer.echo(report.to_markdown())
    typer.echo(f"report: {out_dir}")


def read_user_ids(path: Path) -> np.ndarray:
    """User ids from ``path``: one integer per line, or a CSV whose header has ``user_id``.

    Blank lines are skipped. Raises :class:`UsersFileError` naming the file, line and problem.
    """
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise UsersFileError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise UsersFileError(f"{path}: not a text file") from exc
    numbered = [(i + 1, row) for i, row in enumerate(rows) if any(cell.strip() for cell in row)]
    if not numbered:
        raise UsersFileError(f"{path}: no user ids (empty file)")
    column = 0
    first = [c.strip() for c in numbered[0][1]]
    if not first[0].lstrip("-").isdigit():  # a header
        if "user_id" not in first:
            raise UsersFileError(
                f"{path}, line {numbered[0][0]}: header has no user_id column: {first}"
            )
        column = first.index("user_id")
        numbered = numbered[1:]
        if not numbered:
            raise UsersFileError(f"{path}: header but no user ids")
    ids = []
    for line, row in numbered:
        if column >= len(row):
            raise UsersFileError(f"{path}, line {line}: missing user_id field")
        value = row[column].strip()
        try:
            ids.append(int(value))
        except ValueError:
            raise UsersFileError(
                f"{path}, line {line}: user id {value!r} is not an integer"
            ) from None
    return np.asarray(ids, dtype=np.int64)


def write_recommendations(
    *, recommender: Recommender, user_ids: np.ndarray, k: int, out: Path, batch_size: int = 1024
) -> int:
    """Write ``user_id,item_id,rank`` (original ids, rank from 1) for each user; returns rows."""
    rows = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")  # the csv module's default is \r\n
        writer.writerow(["user_id", "item_id", "rank"])
        for start in range(0, len(user_ids), batch_size):
            batch = user_ids[start : start + batch_size]
            items, _ = recommender.recommend(batch, k=k)
            for user, row in zip(batch.tolist(), items.tolist(), strict=True):
                for rank, item in enumerate((i for i in row if i >= 0), start=1):
                    writer.writerow((user, item, rank))
                    rows += 1
    return rows


def recommend(
    model: str = typer.Option(..., "--model", "-m", help="popular, als, ease or two_tower."),
    users: Annotated[
        Path,
        typer.Option("--users", "-u", help="One user id per line, or a CSV with a user_id column."),
    ] = _REQUIRED,
    k: int = typer.Option(20, "--k", "-k", min=1, max=1000, help="Items per user."),
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output CSV: user_id,item_id,rank.")
    ] = _REQUIRED,
    dataset: str = typer.Option(
        "demo",
        "--dataset",
        "-d",
        envvar="CASCADE_DATASET",
        help="Data set the model was trained on.",
    ),
    full_data: bool = typer.Option(
        False,
        "--full-data/--train-split",
        help="Use the model trained on all data, or on the train split (default, scorable against the test split).",
    ),
    test_fraction: float = typer.Option(
        DEFAULT_TEST_FRACTION, help="Split the model was trained with."
    ),
    min_interactions: int = typer.Option(
        DEFAULT_MIN_INTERACTIONS, help="Split the model was trained with."
    ),
    version: str | None = typer.Option(
        None,
        "--version",
        help="Artifact version to use (its folder name under artifacts/MODEL/); default: the "
        "newest trained on this data and split. als and two_tower only.",
    ),
) -> None:
    """Write top-k recommendations with original ids; unknown users get popular items."""
    from cascade.evaluation.model_data import prepare_data
    from cascade.evaluation.models import MODEL_NAMES, load_model

    if model not in MODEL_NAMES:
        raise typer.BadParameter(f"choose from {', '.join(MODEL_NAMES)}", param_hint="--model")
    try:
        user_ids = read_user_ids(users)
        split = (
            None
            if full_data
            else SplitParams(test_fraction=test_fraction, min_interactions=min_interactions)
        )
        layout = Layout.from_env()
        data, _ = prepare_data(layout=layout, spec=dataset, split=split)
        recommender = load_model(model, layout=layout, dataset=data, version=version)
    except _expected_errors() as exc:
        raise _fail(str(exc)) from None
    try:
        rows = write_recommendations(recommender=recommender, user_ids=user_ids, k=k, out=out)
    except OSError as exc:
        raise _fail(f"{out}: cannot write ({exc.strerror or exc})") from None
    typer.echo(f"wrote {rows} rows for {len(user_ids)} users to {out}")
