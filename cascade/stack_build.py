"""What ``cascade up`` builds before it starts a process: online store, data, features, models.

1. Online store: Redis at ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) when it answers a
   PING, else Feast's SQLite online store.
2. Data and features: the data set, Feast ``apply`` + ``materialize`` (full when the registry is
   new or on ``rematerialize``, incremental otherwise).
3. Models: ALS when ``artifacts/als/latest`` is missing; the Two-Tower when the Triton model
   repository holds no version (trained and exported; skipped with a warning when its training
   code is unavailable).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from cascade.runtime.paths import Layout
from fallback_mf import artifact_format as fmt

logger = logging.getLogger(__name__)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


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
    """Set or clear ``REDIS_URL`` in this process (Feast and children read it); returns it."""
    url = redis_url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if redis_reachable(url):
        os.environ["REDIS_URL"] = url
        return url
    logger.warning("Redis at %s does not answer: using the SQLite online store", url)
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

    dataset = resolve_dataset(spec, layout=layout).name
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
    if not _has_als(layout):
        from fallback_mf.cli import run_train_mf  # implicit, scipy: only when training

        logger.info("training ALS on %s (all interactions)", dataset)
        run_train_mf(layout=layout, spec=dataset, split=None, progress=False)
    if not with_two_tower:
        return dataset, False
    return dataset, _ensure_two_tower(layout=layout, dataset=dataset, repository=model_repository)


def _has_als(layout: Layout) -> bool:
    """Whether the ALS ``latest`` pointer resolves (text file or symlink: the one rule)."""
    try:
        fmt.resolve_latest(fmt.als_root(layout.artifacts_dir))
    except (fmt.ArtifactFormatError, OSError):
        return False
    return True


def _ensure_two_tower(*, layout: Layout, dataset: str, repository: Path) -> bool:
    """True when ``repository`` holds a Two-Tower version (training and exporting one if needed)."""
    from two_tower.export import TEMPLATE_NAME, list_versions, model_dir

    if list_versions(repository):
        return True
    template = model_dir(repository) / TEMPLATE_NAME
    if not template.is_file():  # a repository outside the source tree: copy the tracked template
        from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY

        template.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(model_dir(DEFAULT_MODEL_REPOSITORY) / TEMPLATE_NAME, template)
    try:
        from two_tower.artifacts import ArtifactError, latest_dir, load_two_tower_artifact
        from two_tower.export import export_to_triton
        from two_tower.pipeline import run_train_two_tower
        from two_tower.train import TrainParams
    except ImportError as exc:
        logger.warning("Two-Tower training is not available (%s): starting without Triton", exc)
        return False
    try:
        artifact = latest_dir(layout.artifacts_dir)
    except ArtifactError:
        logger.info("training the Two-Tower on %s (all interactions)", dataset)
        trained = run_train_two_tower(
            layout=layout, spec=dataset, split=None, params=TrainParams(progress=False)
        )
        if trained is None:  # only a non-main DDP rank gets None; a single process always saves
            raise RuntimeError("Two-Tower training saved no artifact") from None
        artifact = trained
    result = export_to_triton(load_two_tower_artifact(artifact), repository=repository)
    logger.info("exported Two-Tower %s to %s", artifact.name, result.version_dir)
    return True
