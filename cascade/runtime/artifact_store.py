"""Versioned artifact folders shared by every model: ``<root>/<UTC timestamp>/`` + a ``latest`` file.

A version folder is written under a temporary name and renamed into place, and ``latest`` is
replaced atomically, so a reader never sees half an artifact. ``fallback_mf.artifacts`` and
``two_tower.artifacts`` keep their own file layouts and call these for the parts they share.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

LATEST_FILE = "latest"
METADATA_FILE = "metadata.json"


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete, or does not match its metadata."""


def new_version(now: datetime | None = None) -> str:
    """A sortable UTC timestamp version, e.g. ``20261129T170501Z``."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def id_map_sha256(user_ids: np.ndarray, item_ids: np.ndarray) -> str:
    """Checksum of both id maps (int64 bytes), recorded in and checked against metadata."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(user_ids, dtype=np.int64).tobytes())
    h.update(b"|")
    h.update(np.ascontiguousarray(item_ids, dtype=np.int64).tobytes())
    return h.hexdigest()


def set_latest(root: Path, version: str, *, kind: str) -> None:
    """Atomically point ``root/latest`` at ``version``."""
    if not (root / version / METADATA_FILE).is_file():
        raise ArtifactError(f"no {kind} artifact {version} in {root}")
    fd, tmp = tempfile.mkstemp(prefix=".latest-", dir=root)
    with os.fdopen(fd, "w") as f:
        f.write(version + "\n")
    os.replace(tmp, root / LATEST_FILE)


def latest_dir(root: Path, *, kind: str, command: str) -> Path:
    """The version folder ``root/latest`` points at; ArtifactError naming ``command`` if none."""
    pointer = root / LATEST_FILE
    if not pointer.is_file():
        raise ArtifactError(f"no {kind} artifact yet: {pointer} is missing (run `{command}`)")
    version = pointer.read_text().strip()
    if not version or "/" in version or version.startswith("."):
        raise ArtifactError(f"{pointer} holds an invalid version {version!r}")
    return root / version


def list_versions(root: Path) -> list[Path]:
    """Complete version folders under ``root``, newest first."""
    if not root.is_dir():
        return []
    dirs = [
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / METADATA_FILE).is_file()
    ]
    return sorted(dirs, key=lambda p: p.name, reverse=True)


def read_metadata(directory: Path, *, kind: str) -> dict[str, Any]:
    """Parsed ``metadata.json`` of a version folder."""
    path = Path(directory) / METADATA_FILE
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} is missing: not a {kind} artifact") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    return meta
