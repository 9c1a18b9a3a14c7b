"""Write ALS artifacts (training's side) and load them back as an :class:`AlsModel`.

The layout, the file names, the ``latest`` rule and the checked read live in
:mod:`fallback_mf.artifact_format` (numpy only, for every reader, the MF service included); this
module writes that format. A version folder is written under a temporary name and renamed into
place, and ``latest`` is replaced atomically, so a reader never sees half an artifact.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cascade.recommenders import PopularityRecommender, UserItems
from cascade.runtime import artifact_store as store
from cascade.runtime.artifact_store import ArtifactError as ArtifactError
from cascade.runtime.artifact_store import new_version
from fallback_mf import artifact_format as fmt
from fallback_mf.artifact_format import FORMAT_VERSION as FORMAT_VERSION
from fallback_mf.artifact_format import LATEST_FILE as LATEST_FILE
from fallback_mf.artifact_format import METADATA_FILE as METADATA_FILE
from fallback_mf.artifact_format import als_root as als_root
from fallback_mf.model import AlsModel

logger = logging.getLogger(__name__)


def arrays_of(model: AlsModel) -> dict[str, np.ndarray]:
    """``model``'s arrays by their artifact name (what :func:`save_als` writes)."""
    arrays: dict[str, np.ndarray] = {
        fmt.USER_FACTORS: model.user_factors,
        fmt.ITEM_FACTORS: model.item_factors,
        fmt.USER_IDS: model.user_ids,
        fmt.ITEM_IDS: model.item_ids,
        fmt.SEEN_INDPTR: model.seen.indptr,
        fmt.SEEN_INDICES: model.seen.indices,
        fmt.POPULAR_ITEMS: model.popular.items,
        fmt.POPULAR_COUNTS: model.popular.counts,
    }
    if model.item_categories is not None:
        arrays[fmt.ITEM_CATEGORIES] = np.asarray(model.item_categories, dtype=str)
    return arrays


def save_als(
    model: AlsModel,
    *,
    artifacts_dir: Path,
    extra_metadata: dict[str, Any] | None = None,
    version: str | None = None,
    update_latest: bool = True,
) -> Path:
    """Write ``model`` as a new version folder and (by default) point ``latest`` at it.

    ``extra_metadata`` (for example ``data`` with the data set checksum and split, ``metrics``)
    is merged into ``metadata.json``. Returns the version folder.
    """
    root = als_root(artifacts_dir)
    root.mkdir(parents=True, exist_ok=True)
    version = version or new_version()
    base, n = version, 1
    while (root / version).exists():  # two trainings within one second
        n += 1
        version = f"{base}-{n}"
    arrays = arrays_of(model)
    meta: dict[str, Any] = dict(model.metadata)
    meta.update(extra_metadata or {})
    meta.update(
        {
            "format_version": FORMAT_VERSION,
            "model_version": version,
            "trained_at": meta.get("trained_at") or datetime.now(UTC).isoformat(timespec="seconds"),
            "id_map_sha256": store.id_map_sha256(model.user_ids, model.item_ids),
            "shapes": {name: list(a.shape) for name, a in arrays.items()},
        }
    )
    meta.setdefault("metrics", {})
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    try:
        for name, array in arrays.items():
            np.save(fmt.array_path(tmp, name), np.ascontiguousarray(array), allow_pickle=False)
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        os.rename(tmp, root / version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if update_latest:
        set_latest(artifacts_dir=artifacts_dir, version=version)
    logger.info("saved ALS artifact %s", root / version)
    return root / version


def set_latest(*, artifacts_dir: Path, version: str) -> None:
    """Atomically point ``latest`` at ``version`` (a text file holding the name)."""
    store.set_latest(als_root(artifacts_dir), version, kind="ALS")


def latest_dir(artifacts_dir: Path) -> Path:
    """The version folder ``latest`` names (``artifact_format.resolve_latest``'s rule).

    :class:`ArtifactError` when there is none.
    """
    try:
        return fmt.resolve_latest(als_root(artifacts_dir))
    except fmt.ArtifactFormatError as exc:
        raise ArtifactError(str(exc)) from exc


def list_versions(artifacts_dir: Path) -> list[Path]:
    """Complete version folders, newest first."""
    return store.list_versions(als_root(artifacts_dir))


def read_metadata(directory: Path) -> dict[str, Any]:
    """Parsed ``metadata.json`` of a version folder."""
    try:
        return fmt.read_metadata(directory)
    except fmt.ArtifactFormatError as exc:
        raise ArtifactError(str(exc)) from exc


def load_als(directory: Path) -> AlsModel:
    """Load and validate a version folder (``artifact_format.read_checked``) as an AlsModel.

    Any mismatch raises :class:`ArtifactError` naming the file and the problem.
    """
    try:
        arrays, meta = fmt.read_checked(directory)
    except fmt.ArtifactFormatError as exc:
        raise ArtifactError(str(exc)) from exc
    user_ids = arrays[fmt.USER_IDS].astype(np.int64, copy=False)
    return AlsModel(
        user_factors=arrays[fmt.USER_FACTORS].astype(np.float32, copy=False),
        item_factors=arrays[fmt.ITEM_FACTORS].astype(np.float32, copy=False),
        user_ids=user_ids,
        item_ids=arrays[fmt.ITEM_IDS].astype(np.int64, copy=False),
        seen=UserItems(
            user_ids=user_ids,
            indptr=arrays[fmt.SEEN_INDPTR].astype(np.int64, copy=False),
            indices=arrays[fmt.SEEN_INDICES].astype(np.int64, copy=False),
        ),
        popular=PopularityRecommender(
            items=arrays[fmt.POPULAR_ITEMS], counts=arrays[fmt.POPULAR_COUNTS]
        ),
        metadata=meta,
        item_categories=arrays.get(fmt.ITEM_CATEGORIES),
    )


def load_latest(artifacts_dir: Path) -> AlsModel:
    """Load the version ``latest`` points at."""
    return load_als(latest_dir(artifacts_dir))
