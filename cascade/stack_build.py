"""What ``cascade up`` builds before it starts a process: online store, data, features, models.

1. Online store: Redis at ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) when it answers a
   PING, else Feast's SQLite online store.
2. Data and features: the data set, Feast ``apply`` + ``materialize`` (full when the registry is
   new or on ``rematerialize``, incremental otherwise).
3. Models that match the data set being served: every artifact records the data it was trained
   on (name, interactions checksum, split). ALS is trained when ``artifacts/als/latest`` is
   missing or was trained on other data (``SCALE=tiny make up`` then ``make up`` must not serve
   tiny's model to demo); the Two-Tower is exported when the newest Triton version is missing or
   comes from an artifact trained on other data (a matching artifact is exported, or one is
   trained), skipped with a warning when its training code is unavailable. Each replacement
   says in a WARNING what did not match.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from cascade.runtime.paths import Layout
from cascade.runtime.redact import redact_url
from fallback_mf import artifact_format as fmt

logger = logging.getLogger(__name__)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The Two-Tower `cascade up` trains when none is there: a serving model in minutes, not the
# converged one (6-10 epochs, ~40 CPU-minutes on demo; `cascade train two-tower --full-data` and
# `cascade export two-tower` give that). Demo, 2 epochs: test Recall@20 0.233 vs 0.248 converged.
UP_TWO_TOWER_EPOCHS = 2


def redis_reachable(url: str, *, timeout_s: float = 0.5) -> bool:
    """True when Redis at ``url`` answers PING within ``timeout_s``."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def choose_online_store(redis_url: str | None) -> str | None:
    """The one rule for the online store (``cascade up`` and every ``cascade features`` command).

    A Redis URL given (``--redis-url`` or ``REDIS_URL``) is used, and one that does not answer
    is an error (``FeatureStoreError``): features silently written to SQLite instead would not be
    what the gateway reads. None given: Redis at ``DEFAULT_REDIS_URL`` when it answers a PING,
    else SQLite. Sets or clears ``REDIS_URL`` in this process (Feast and children read it) and
    returns it."""
    from cascade.runtime.feature_store import FeatureStoreError

    given = redis_url or os.environ.get("REDIS_URL")
    url = given or DEFAULT_REDIS_URL
    if redis_reachable(url):
        os.environ["REDIS_URL"] = url
        return url
    if given:
        raise FeatureStoreError(
            f"Redis at {redact_url(url)} does not answer (REDIS_URL); start it, or unset "
            "REDIS_URL to use the default Redis when it answers, else SQLite"
        )
    logger.warning("Redis at %s does not answer: using the SQLite online store", redact_url(url))
    os.environ.pop("REDIS_URL", None)
    return None


def build(
    *,
    layout: Layout,
    spec: str,
    model_repository: Path,
    with_two_tower: bool = True,
    rematerialize: bool = False,
) -> tuple[str, bool]:
    """Build the data set, features and models that are missing; ``(dataset, two_tower_ready)``."""
    from cascade.data.resolve import resolve_dataset
    from cascade.features import store
    from cascade.runtime import feature_store

    directory = resolve_dataset(spec, layout=layout)
    dataset = directory.name
    serving = data_identity(directory)
    new_registry = not (
        feature_store.store_dir(layout=layout, dataset=dataset) / "registry.db"
    ).exists()
    store.apply(layout=layout, dataset=dataset)
    report = store.materialize(layout=layout, dataset=dataset, full=new_registry or rematerialize)
    logger.info(
        "features of %s materialized into %s (%s): %d rows in %.1fs",
        dataset,
        report.online_store,
        "full" if report.full else "incremental",
        sum(v.rows for v in report.views),
        report.seconds,
    )
    if not _als_matches(layout, serving):
        from fallback_mf.cli import run_train_mf  # implicit, scipy: only when training

        logger.info("training ALS on %s (all interactions)", dataset)
        run_train_mf(layout=layout, spec=dataset, split=None, progress=False)
    if not with_two_tower:
        return dataset, False
    return dataset, _ensure_two_tower(
        layout=layout, dataset=dataset, serving=serving, repository=model_repository
    )


def data_identity(directory: Path) -> dict[str, Any]:
    """What an artifact trained on all of this data set records under ``data``."""
    from cascade.data.dataset import read_manifest

    manifest = read_manifest(directory)
    return {"dataset": directory.name, "checksum": manifest.get("interactions_sha256")}


def trained_on(meta: dict[str, Any], serving: dict[str, Any]) -> str | None:
    """None when an artifact's metadata says it was trained on all of ``serving``'s data, else
    what differs (for the log)."""
    data = meta.get("data") or {}
    if data.get("split") is not None:
        return f"it was trained on a split of {data.get('dataset')}, not on all of it"
    if data.get("checksum") != serving["checksum"] or not serving["checksum"]:
        return (
            f"it was trained on {data.get('dataset')!r} (checksum "
            f"{str(data.get('checksum'))[:12]}), not {serving['dataset']!r} (checksum "
            f"{str(serving['checksum'])[:12]})"
        )
    return None


def _als_matches(layout: Layout, serving: dict[str, Any]) -> bool:
    """Whether ALS ``latest`` resolves (text file or symlink: the one rule), was trained on the
    data being served and records item categories (ALS training takes seconds; without them the
    category filter answers 503)."""
    try:
        latest = fmt.resolve_latest(fmt.als_root(layout.artifacts_dir))
        meta = fmt.read_metadata(latest)
    except (fmt.ArtifactFormatError, OSError):
        return False
    mismatch = trained_on(meta, serving)
    if mismatch is None and fmt.ITEM_CATEGORIES not in (meta.get("shapes") or {}):
        # trained before the category filter: the gateway would answer filtered requests 503
        mismatch = "it records no item categories (trained before the category filter)"
    if mismatch:
        logger.warning("ALS %s is not served: %s; training one", latest.name, mismatch)
        return False
    return True


def _served_two_tower_mismatch(
    *, layout: Layout, repository: Path, versions: list[int], serving: dict[str, Any]
) -> str | None:
    """None when Triton's newest version comes from an artifact trained on the served data."""
    import json

    from two_tower.export import model_dir

    newest = model_dir(repository) / str(versions[-1])
    from two_tower import contract

    try:
        exported = json.loads((newest / "metadata.json").read_text())
        if exported.get("contract") != contract.fingerprint():
            return (
                f"{newest} was exported for another Triton contract "
                f"({exported.get('contract')}, this code speaks {contract.fingerprint()})"
            )
        name = str(exported["artifact_version"])
        artifact_meta = json.loads(
            (layout.artifacts_dir / "two_tower" / name / "metadata.json").read_text()
        )
    except (OSError, ValueError, KeyError) as exc:
        return f"its training artifact cannot be read ({exc})"
    mismatch = trained_on(artifact_meta, serving)
    return f"{newest} ({name}): {mismatch}" if mismatch else None


def _ensure_two_tower(
    *, layout: Layout, dataset: str, serving: dict[str, Any], repository: Path
) -> bool:
    """True when ``repository``'s newest Two-Tower version was trained on the served data
    (exporting a matching artifact, or training one, when not)."""
    from two_tower.export import TEMPLATE_NAME, list_versions, model_dir

    versions = list_versions(repository)
    if versions:
        mismatch = _served_two_tower_mismatch(
            layout=layout, repository=repository, versions=versions, serving=serving
        )
        if mismatch is None:
            return True
        logger.warning(
            "Two-Tower version %s is not served: %s; exporting one", versions[-1], mismatch
        )
    template = model_dir(repository) / TEMPLATE_NAME
    if not template.is_file():  # a repository outside the source tree: copy the tracked template
        from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY

        template.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(model_dir(DEFAULT_MODEL_REPOSITORY) / TEMPLATE_NAME, template)
    try:
        from two_tower.artifacts import load_two_tower_artifact
        from two_tower.export import export_to_triton
        from two_tower.pipeline import run_train_two_tower
        from two_tower.train import TrainParams
    except ImportError as exc:
        logger.warning("Two-Tower training is not available (%s): starting without Triton", exc)
        return False
    artifact = _matching_two_tower_artifact(layout, serving)
    if artifact is None:
        logger.info(
            "training the Two-Tower on %s (all interactions, %d epochs to start serving; "
            "`cascade train two-tower --full-data` then `cascade export two-tower` trains it "
            "to convergence)",
            dataset,
            UP_TWO_TOWER_EPOCHS,
        )
        trained = run_train_two_tower(
            layout=layout,
            spec=dataset,
            split=None,
            params=TrainParams(progress=False, epochs=UP_TWO_TOWER_EPOCHS),
        )
        if trained is None:  # only a non-main DDP rank gets None; a single process always saves
            raise RuntimeError("Two-Tower training saved no artifact") from None
        artifact = trained
    result = export_to_triton(load_two_tower_artifact(artifact), repository=repository)
    logger.info("exported Two-Tower %s to %s", artifact.name, result.version_dir)
    return True


def _matching_two_tower_artifact(layout: Layout, serving: dict[str, Any]) -> Path | None:
    """The newest Two-Tower artifact trained on all of the served data, if any."""
    from two_tower.artifacts import ArtifactError, list_versions, read_metadata

    for directory in sorted(
        list_versions(layout.artifacts_dir), key=lambda p: p.name, reverse=True
    ):
        try:
            if trained_on(read_metadata(directory), serving) is None:
                return directory
        except ArtifactError:
            continue
    return None
