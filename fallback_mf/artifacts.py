"""Save and load ALS artifacts as ``.npy`` files plus ``metadata.json`` (no pickle).

Layout (``layout.artifacts_dir / "als"``)::

    als/
      latest                      text file: the version to serve
      20261129T170501Z/
        user_factors.npy          float32 (n_users, factors)
        item_factors.npy          float32 (n_items, factors)
        user_ids.npy, item_ids.npy   int64, row index -> original id (sorted)
        seen_indptr.npy, seen_indices.npy   each user's training items (CSR over item indices)
        popular_items.npy, popular_counts.npy   ranked item ids and their interaction counts
        metadata.json             format, versions, params, data checksum + split, id-map sha256,
                                  shapes, metrics, trained_at, model_version

A version folder is written under a temporary name and renamed into place, and ``latest`` is
replaced atomically, so a reader never sees half an artifact.
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

from cascade import artifact_store as store
from cascade.artifact_store import ArtifactError as ArtifactError
from cascade.artifact_store import id_map_sha256 as id_map_sha256
from cascade.artifact_store import new_version as new_version
from cascade.recommenders import PopularityRecommender, UserItems
from fallback_mf.model import AlsModel

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
LATEST_FILE = store.LATEST_FILE
METADATA_FILE = store.METADATA_FILE
_ARRAYS = (
    "user_factors",
    "item_factors",
    "user_ids",
    "item_ids",
    "seen_indptr",
    "seen_indices",
    "popular_items",
    "popular_counts",
)


def als_root(artifacts_dir: Path) -> Path:
    """The folder holding every ALS version and the ``latest`` pointer."""
    return Path(artifacts_dir) / "als"


def _arrays(model: AlsModel) -> dict[str, np.ndarray]:
    return {
        "user_factors": model.user_factors,
        "item_factors": model.item_factors,
        "user_ids": model.user_ids,
        "item_ids": model.item_ids,
        "seen_indptr": model.seen.indptr,
        "seen_indices": model.seen.indices,
        "popular_items": model.popular.items,
        "popular_counts": model.popular.counts,
    }


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
    arrays = _arrays(model)
    meta: dict[str, Any] = dict(model.metadata)
    meta.update(extra_metadata or {})
    meta.update(
        {
            "format_version": FORMAT_VERSION,
            "model_version": version,
            "trained_at": meta.get("trained_at") or datetime.now(UTC).isoformat(timespec="seconds"),
            "id_map_sha256": id_map_sha256(model.user_ids, model.item_ids),
            "shapes": {name: list(a.shape) for name, a in arrays.items()},
        }
    )
    meta.setdefault("metrics", {})
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
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
    """Atomically point ``latest`` at ``version``."""
    store.set_latest(als_root(artifacts_dir), version, kind="ALS")


def latest_dir(artifacts_dir: Path) -> Path:
    """The version folder ``latest`` points at; :class:`ArtifactError` when there is none."""
    return store.latest_dir(als_root(artifacts_dir), kind="ALS", command="cascade train mf")


def list_versions(artifacts_dir: Path) -> list[Path]:
    """Complete version folders, newest first."""
    return store.list_versions(als_root(artifacts_dir))


def read_metadata(directory: Path) -> dict[str, Any]:
    """Parsed ``metadata.json`` of a version folder."""
    return store.read_metadata(directory, kind="ALS")


def load_als(directory: Path) -> AlsModel:
    """Load and validate a version folder (format, array shapes and id-map checksum).

    Any mismatch raises :class:`ArtifactError` naming the file and the problem.
    """
    directory = Path(directory)
    meta = read_metadata(directory)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{directory}: format_version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}"
        )
    shapes = meta.get("shapes") or {}
    arrays: dict[str, np.ndarray] = {}
    for name in _ARRAYS:
        path = directory / f"{name}.npy"
        try:
            arrays[name] = np.load(path, allow_pickle=False, mmap_mode=None)
        except FileNotFoundError as exc:
            raise ArtifactError(f"{path} is missing") from exc
        except ValueError as exc:
            raise ArtifactError(f"{path} is not a plain numpy array: {exc}") from exc
        if list(arrays[name].shape) != shapes.get(name):
            raise ArtifactError(
                f"{path}: shape {list(arrays[name].shape)} does not match metadata {shapes.get(name)}"
            )
    _check_consistency(directory, arrays)
    checksum = id_map_sha256(arrays["user_ids"], arrays["item_ids"])
    if checksum != meta.get("id_map_sha256"):
        raise ArtifactError(
            f"{directory}: id maps do not match metadata id_map_sha256 "
            f"({checksum[:12]}... != {str(meta.get('id_map_sha256'))[:12]}...)"
        )
    return AlsModel(
        user_factors=arrays["user_factors"].astype(np.float32, copy=False),
        item_factors=arrays["item_factors"].astype(np.float32, copy=False),
        user_ids=arrays["user_ids"].astype(np.int64, copy=False),
        item_ids=arrays["item_ids"].astype(np.int64, copy=False),
        seen=UserItems(
            user_ids=arrays["user_ids"].astype(np.int64, copy=False),
            indptr=arrays["seen_indptr"].astype(np.int64, copy=False),
            indices=arrays["seen_indices"].astype(np.int64, copy=False),
        ),
        popular=PopularityRecommender(
            items=arrays["popular_items"], counts=arrays["popular_counts"]
        ),
        metadata=meta,
    )


def _check_consistency(directory: Path, a: dict[str, np.ndarray]) -> None:
    """Shapes that must agree with each other, whatever metadata says."""
    n_users, n_items = len(a["user_ids"]), len(a["item_ids"])
    problems = []
    if a["user_factors"].ndim != 2 or a["user_factors"].shape[0] != n_users:
        problems.append("user_factors rows != len(user_ids)")
    if a["item_factors"].ndim != 2 or a["item_factors"].shape[0] != n_items:
        problems.append("item_factors rows != len(item_ids)")
    if a["user_factors"].shape[1:] != a["item_factors"].shape[1:]:
        problems.append("user and item factor widths differ")
    if len(a["seen_indptr"]) != n_users + 1 or (
        n_users and a["seen_indptr"][-1] != len(a["seen_indices"])
    ):
        problems.append("seen CSR does not match the users")
    elif len(a["seen_indices"]) and (
        a["seen_indices"].min() < 0 or a["seen_indices"].max() >= n_items
    ):
        problems.append("seen_indices outside the item range")
    for name in ("user_ids", "item_ids"):
        if len(a[name]) > 1 and not (np.diff(a[name]) > 0).all():
            problems.append(f"{name} not sorted and unique")
    if problems:
        raise ArtifactError(f"{directory}: inconsistent arrays: {'; '.join(problems)}")


def load_latest(artifacts_dir: Path) -> AlsModel:
    """Load the version ``latest`` points at."""
    return load_als(latest_dir(artifacts_dir))
