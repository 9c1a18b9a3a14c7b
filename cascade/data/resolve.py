"""Turn a data spec or name into a data set folder under the Cascade home, building it if needed."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from cascade.data.dataset import DatasetNotFoundError, read_manifest, sha256_file, write_dataset
from cascade.data.errors import DataSourceError
from cascade.data.event_log import log_fingerprint, merge_event_log
from cascade.data.features import (
    build_feature_tables,
    default_snapshot_every,
    write_feature_tables,
)
from cascade.data.loaders import load, parse_spec, source_file
from cascade.data.profiles import DEFAULT_PROFILE, Profile
from cascade.runtime.paths import Layout
from cascade.runtime.schema import FEATURES_DIR, USER_ACTIVITY_FILE
from events.contract import EVENTS_DIR

logger = logging.getLogger(__name__)


def dataset_name(spec: str, *, positive_threshold: float | None = None) -> str:
    """The folder name a spec builds: the scale for synthetic data, else ``<stem>-<sha8>``.

    A positive-rating threshold changes the rows, so it is part of the name (``-pos4``).
    """
    kind, arg = parse_spec(spec)
    if kind == "synthetic":
        name = arg
    else:
        path = Path(arg).expanduser()
        ratings = source_file(spec)
        stem = path.name if path.is_dir() else ratings.stem
        name = f"{stem}-{sha256_file(ratings)[:8]}"
    if positive_threshold is not None:
        name += f"-pos{positive_threshold:g}"
    return name


def _up_to_date(directory: Path, wanted: dict[str, Any]) -> bool:
    try:
        manifest = read_manifest(directory)
    except DatasetNotFoundError:
        return False
    if not (directory / FEATURES_DIR / USER_ACTIVITY_FILE).is_file():
        return False
    return all(manifest.get(k) == v for k, v in wanted.items())


def resolve_dataset(
    spec: str,
    *,
    layout: Layout,
    positive_threshold: float | None = None,
    seed: int = 42,
    name: str | None = None,
    snapshot_every: timedelta | None = None,
    force: bool = False,
    profile: Profile | None = None,
    fold_event_log: bool = False,
) -> Path:
    """The folder of the data set ``spec`` names, built (with its feature tables) if missing.

    ``spec`` is a plain name of an existing folder (``demo``), or ``synthetic:SCALE``,
    ``movielens:PATH``, ``csv:PATH``. A folder whose manifest matches the spec, seed, profile
    (synthetic data; default :data:`~cascade.data.profiles.DEFAULT_PROFILE`) and threshold is
    reused unless ``force``; ``name`` overrides the folder name. Another profile rebuilds the
    same folder (``synthetic:demo`` is ``demo`` whatever its profile).
    """
    if ":" not in spec:
        directory = layout.dataset_dir(spec)
        try:
            read_manifest(directory)
        except DatasetNotFoundError:
            known = sorted(
                p.name for p in layout.datasets_dir.glob("*") if (p / "manifest.json").is_file()
            )
            hint = f"; known: {', '.join(known)}" if known else ""
            raise DataSourceError(
                f"no data set named {spec!r} in {layout.datasets_dir}{hint}. "
                "Build one with: cascade data --source synthetic:demo"
            ) from None
        return directory
    kind, _ = parse_spec(spec)
    if kind != "synthetic" and profile is not None:
        raise DataSourceError(f"a profile applies to synthetic:SCALE data only, not to {spec!r}")
    directory = layout.dataset_dir(
        name or dataset_name(spec, positive_threshold=positive_threshold)
    )
    wanted: dict[str, Any] = {"source": spec, "positive_threshold": positive_threshold}
    if kind == "synthetic":
        profile = profile or DEFAULT_PROFILE
        wanted["seed"] = seed
        wanted["profile"] = profile.value
    if snapshot_every is not None:
        wanted["snapshot_days"] = snapshot_every.total_seconds() / 86_400
    # The consumer's event log (issue 17): any rebuild adds the log's consumption events to the
    # source's interactions, but only an explicit data build (`cascade data`, the retraining
    # job's first step: fold_event_log) counts a new part file as "out of date". Otherwise every
    # `cascade up` or `cascade evaluate` after live traffic would rebuild the data and retrain.
    log_now = log_fingerprint(directory / EVENTS_DIR)
    if fold_event_log:
        wanted["event_log"] = log_now
    if not force and _up_to_date(directory, wanted):
        logger.info("data set %s is up to date at %s", spec, directory)
        return directory
    ds = load(spec, positive_threshold=positive_threshold, seed=seed, profile=profile)
    ds.name = directory.name
    ds, _ = merge_event_log(ds, directory / EVENTS_DIR, positive_threshold=positive_threshold)
    every = snapshot_every or default_snapshot_every(len(ds.interactions))
    tables = build_feature_tables(ds, snapshot_every=every)
    write_dataset(
        ds,
        directory,
        extra_manifest={
            "event_log": log_now,
            "positive_threshold": positive_threshold,
            "snapshot_days": every.total_seconds() / 86_400,
        },
    )
    write_feature_tables(tables, directory)
    return directory
