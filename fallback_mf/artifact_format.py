"""The ALS artifact's on-disk format for its readers: file names, the ``latest`` rule, readers.

Imports only the standard library, numpy and the runtime core (``cascade.runtime``: the
checksum and metadata reader every artifact shares), so any consumer (the MF service, the gateway's
popular tier, tools) can read an artifact without the training stack. The writer, used by
training, is :mod:`fallback_mf.artifacts`; it takes every name from here.

Layout (``als_root(artifacts_dir)``, i.e. ``<artifacts_dir>/als``)::

    als/
      latest                      the version to serve (see resolve_latest)
      20261129T170501Z/           one version folder
        user_factors.npy          float32 (n_users, factors)
        item_factors.npy          float32 (n_items, factors)
        user_ids.npy, item_ids.npy   int64, row index -> original id (sorted, unique)
        seen_indptr.npy, seen_indices.npy   each user's training items (CSR over item indices)
        popular_items.npy, popular_counts.npy   ranked item ids and their interaction counts
        item_categories.npy       unicode: each item's category name ("" = unknown), in item_ids
                                  order; optional (artifacts trained before the category filter
                                  lack it: the MF service and the gateway then refuse filters)
        metadata.json             format_version, shapes, id-map sha256, params, metrics, ...

Every ``.npy`` is a plain array (``allow_pickle=False``); the writer stores the int arrays as int64.
:func:`read_checked` reads a whole version folder and validates it (format version, shapes
against metadata and each other, id-map checksum); the single readers read one part each.

The ``latest`` rule (:func:`resolve_latest`, the only place that reads the pointer): ``latest`` is
either a text file holding a version folder name (what training writes, replaced atomically), or
a symlink to a version folder directly inside the same root (``ln -sfn 20261129T170501Z latest``;
only the target's folder name counts). A version name is non-empty, holds no ``/`` and does not
start with ``.`` (hidden names are the writer's temporary folders).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cascade.runtime import artifact_store
from cascade.runtime.artifact_store import id_map_sha256

FORMAT_VERSION = 1
ALS_DIR = "als"
LATEST_FILE = "latest"
METADATA_FILE = "metadata.json"
_TRAIN_COMMAND = "cascade train mf"

USER_FACTORS = "user_factors"
ITEM_FACTORS = "item_factors"
USER_IDS = "user_ids"
ITEM_IDS = "item_ids"
SEEN_INDPTR = "seen_indptr"
SEEN_INDICES = "seen_indices"
POPULAR_ITEMS = "popular_items"
POPULAR_COUNTS = "popular_counts"
ARRAY_NAMES = (
    USER_FACTORS,
    ITEM_FACTORS,
    USER_IDS,
    ITEM_IDS,
    SEEN_INDPTR,
    SEEN_INDICES,
    POPULAR_ITEMS,
    POPULAR_COUNTS,
)
ITEM_CATEGORIES = "item_categories"
# Arrays a version may lack (older artifacts); when metadata's shapes name one, it must be there.
OPTIONAL_ARRAY_NAMES = (ITEM_CATEGORIES,)


class ArtifactFormatError(ValueError):
    """``latest`` is missing or unusable, a file is missing or malformed (an array not plain
    numpy, metadata not JSON), or a version folder fails :func:`read_checked`'s checks."""


def als_root(artifacts_dir: Path) -> Path:
    """The folder holding every ALS version and the ``latest`` pointer."""
    return Path(artifacts_dir) / ALS_DIR


def array_path(directory: Path, name: str) -> Path:
    """Path of the array ``name`` (one of :data:`ARRAY_NAMES`) in a version folder."""
    return Path(directory) / f"{name}.npy"


def is_version_name(name: str) -> bool:
    """True for a usable version folder name (see the module docstring)."""
    return bool(name) and "/" not in name and "\x00" not in name and not name.startswith(".")


def resolve_latest(root: Path) -> Path:
    """The version folder ``root/latest`` names (text file or symlink, module docstring).

    ``root`` is the ALS root (:func:`als_root`). Raises :class:`ArtifactFormatError` when the
    pointer is missing, unreadable or names no valid version; whether the folder is complete is
    for the loader to find out.
    """
    root = Path(root)
    pointer = root / LATEST_FILE
    try:
        if pointer.is_symlink():
            target = pointer.resolve()
            if target.parent != root.resolve():
                raise ArtifactFormatError(
                    f"{pointer} links to {target}, not to a version folder in {root}"
                )
            version = target.name
        elif pointer.is_file():
            version = pointer.read_text(encoding="utf-8").strip()
        elif not pointer.exists():
            raise ArtifactFormatError(
                f"no ALS artifact yet: {pointer} is missing (run `{_TRAIN_COMMAND}`)"
            )
        else:
            raise ArtifactFormatError(f"{pointer} is neither a text file nor a symlink")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactFormatError(f"cannot read {pointer}: {exc}") from exc
    if not is_version_name(version):
        raise ArtifactFormatError(f"{pointer} does not name a version folder: {version!r}")
    return root / version


def read_array(directory: Path, name: str, *, mmap: bool = False) -> np.ndarray:
    """One array of a version folder, never unpickled; memory-mapped read-only when ``mmap``.

    :class:`ArtifactFormatError` when the file is missing or holds objects; other ``OSError``
    (permissions, I/O) propagate.
    """
    path = array_path(directory, name)
    try:
        array: np.ndarray = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError as exc:
        raise ArtifactFormatError(f"{path} is missing") from exc
    except ValueError as exc:
        raise ArtifactFormatError(f"{path} is not a plain numpy array: {exc}") from exc
    return array


def _int64(array: np.ndarray, mmap: bool) -> np.ndarray:
    # A memory-mapped array stays as stored (int64 from the writer): a cast would read it all.
    return array if mmap else array.astype(np.int64, copy=False)


def read_popular(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(item_ids, counts)``, both int64, most popular first."""
    items = read_array(directory, POPULAR_ITEMS).astype(np.int64, copy=False)
    counts = read_array(directory, POPULAR_COUNTS).astype(np.int64, copy=False)
    if items.shape != counts.shape or items.ndim != 1:
        raise ArtifactFormatError(f"{directory}: popular items and counts differ in shape")
    return items, counts


def read_item_ids(directory: Path, *, mmap: bool = False) -> np.ndarray:
    """Item id of each item index: sorted, unique (int64)."""
    return _int64(read_array(directory, ITEM_IDS, mmap=mmap), mmap)


def read_user_ids(directory: Path, *, mmap: bool = False) -> np.ndarray:
    """User id of each user index: sorted, unique (int64)."""
    return _int64(read_array(directory, USER_IDS, mmap=mmap), mmap)


def read_item_categories(directory: Path) -> np.ndarray | None:
    """Each item's category name in item id order (unicode); None when the version predates
    item categories (its metadata names no such array)."""
    meta = read_metadata(directory)
    if ITEM_CATEGORIES not in (meta.get("shapes") or {}):
        return None
    categories = read_array(directory, ITEM_CATEGORIES)
    if categories.ndim != 1 or categories.dtype.kind != "U":
        raise ArtifactFormatError(
            f"{array_path(directory, ITEM_CATEGORIES)}: not one category name per item"
        )
    return categories


@dataclass(frozen=True)
class SeenItems:
    """Each training user's items: CSR rows of item *indices* (into the item ids), by user id."""

    user_ids: np.ndarray  # sorted, unique
    indptr: np.ndarray  # len(user_ids) + 1
    indices: np.ndarray  # item indices

    def item_indices(self, user_id: int) -> np.ndarray:
        """Item indices the user interacted with in training (int64; empty when unknown)."""
        pos = int(np.searchsorted(self.user_ids, user_id))
        if pos >= len(self.user_ids) or int(self.user_ids[pos]) != user_id:
            return np.empty(0, dtype=np.int64)
        start, end = int(self.indptr[pos]), int(self.indptr[pos + 1])
        return np.asarray(self.indices[start:end], dtype=np.int64)


def read_seen(directory: Path, *, mmap: bool = False) -> SeenItems:
    """Each training user's items (``mmap``: paged in on use, for large data sets)."""
    indptr = read_array(directory, SEEN_INDPTR, mmap=mmap)
    indices = read_array(directory, SEEN_INDICES, mmap=mmap)
    return SeenItems(
        user_ids=read_user_ids(directory, mmap=mmap),
        indptr=_int64(indptr, mmap),
        indices=_int64(indices, mmap),
    )


def read_metadata(directory: Path) -> dict[str, Any]:
    """Parsed ``metadata.json`` of a version folder (``cascade.runtime.artifact_store``'s reader)."""
    try:
        return artifact_store.read_metadata(directory, kind="ALS")
    except artifact_store.ArtifactError as exc:
        raise ArtifactFormatError(str(exc)) from exc


def read_checked(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(every array by name, metadata)`` of a version folder, validated.

    Checks the format version, each array's shape against metadata, the shapes against each
    other and the id-map checksum; :class:`ArtifactFormatError` names the file and the problem.
    """
    directory = Path(directory)
    meta = read_metadata(directory)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactFormatError(
            f"{directory}: format_version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}"
        )
    shapes = meta.get("shapes") or {}
    arrays: dict[str, np.ndarray] = {}
    for name in ARRAY_NAMES:
        arrays[name] = read_array(directory, name)
        if list(arrays[name].shape) != shapes.get(name):
            raise ArtifactFormatError(
                f"{array_path(directory, name)}: shape {list(arrays[name].shape)} "
                f"does not match metadata {shapes.get(name)}"
            )
    for name in OPTIONAL_ARRAY_NAMES:
        if name in shapes:
            arrays[name] = read_array(directory, name)
            if list(arrays[name].shape) != shapes[name]:
                raise ArtifactFormatError(
                    f"{array_path(directory, name)}: shape {list(arrays[name].shape)} "
                    f"does not match metadata {shapes[name]}"
                )
    _check_consistency(directory, arrays)
    checksum = id_map_sha256(arrays[USER_IDS], arrays[ITEM_IDS])
    if checksum != meta.get("id_map_sha256"):
        raise ArtifactFormatError(
            f"{directory}: id maps do not match metadata id_map_sha256 "
            f"({checksum[:12]}... != {str(meta.get('id_map_sha256'))[:12]}...)"
        )
    return arrays, meta


def _check_consistency(directory: Path, a: dict[str, np.ndarray]) -> None:
    """Shapes that must agree with each other, whatever metadata says."""
    n_users, n_items = len(a[USER_IDS]), len(a[ITEM_IDS])
    problems = []
    if a[USER_FACTORS].ndim != 2 or a[USER_FACTORS].shape[0] != n_users:
        problems.append("user_factors rows != len(user_ids)")
    if a[ITEM_FACTORS].ndim != 2 or a[ITEM_FACTORS].shape[0] != n_items:
        problems.append("item_factors rows != len(item_ids)")
    if a[USER_FACTORS].shape[1:] != a[ITEM_FACTORS].shape[1:]:
        problems.append("user and item factor widths differ")
    indptr, indices = a[SEEN_INDPTR], a[SEEN_INDICES]
    if len(indptr) != n_users + 1 or (n_users and indptr[-1] != len(indices)):
        problems.append("seen CSR does not match the users")
    elif len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        problems.append("seen_indices outside the item range")
    if a[POPULAR_ITEMS].shape != a[POPULAR_COUNTS].shape:
        problems.append("popular_items and popular_counts differ in shape")
    if ITEM_CATEGORIES in a and (
        a[ITEM_CATEGORIES].shape != (n_items,) or a[ITEM_CATEGORIES].dtype.kind != "U"
    ):
        problems.append("item_categories is not one category name per item")
    for name in (USER_IDS, ITEM_IDS):
        if len(a[name]) > 1 and not (np.diff(a[name]) > 0).all():
            problems.append(f"{name} not sorted and unique")
    if problems:
        raise ArtifactFormatError(f"{directory}: inconsistent arrays: {'; '.join(problems)}")
