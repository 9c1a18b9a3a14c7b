"""The model the MF service serves, and its hot reload.

A :class:`ModelStore` holds one :class:`LoadedModel` reference. A request reads that reference
once and uses it to the end, so a reload that swaps it mid-request cannot mix two models: requests
in flight finish on the old model, new ones get the new one, none is refused. Loading runs in a
worker thread (``asyncio.to_thread``), so the event loop keeps answering during a reload.

Versions live in ``<artifacts_dir>/<version>/``; ``<artifacts_dir>/latest`` names the one to
serve, by the rule of :func:`fallback_mf.artifact_format.resolve_latest` (a text file holding the
folder name, or a symlink to the folder). The default loader builds a numpy-only
:class:`~fallback_mf.service.scoring.AlsScorer` from the checked artifact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fallback_mf.artifact_format import (
    ArtifactFormatError,
    is_version_name,
    read_checked,
    read_metadata,
    resolve_latest,
)
from fallback_mf.service.errors import ModelNotReady, ReloadFailed
from fallback_mf.service.scoring import AlsScorer

logger = logging.getLogger(__name__)

# Errors a bad or missing artifact raises; anything else is a bug and propagates.
_LOAD_ERRORS = (ArtifactFormatError, OSError, ValueError, KeyError)

Loader = Callable[[Path], AlsScorer]


def load_artifact(directory: Path) -> AlsScorer:
    """Default loader: the version folder, validated (``artifact_format.read_checked``)."""
    arrays, _ = read_checked(directory)
    return AlsScorer.from_arrays(arrays)


@dataclass(frozen=True)
class Recommendation:
    """One answer: item ids and scores (best first) and whether the model knew the user."""

    item_ids: list[int]
    scores: list[float]
    known_user: bool
    model_version: str


@dataclass(frozen=True)
class LoadedModel:
    """An immutable (model, version) pair: what one request scores with."""

    model: AlsScorer
    version: str
    directory: Path
    loaded_at: float  # unix time

    def knows(self, user_id: int) -> bool:
        """True when the model has factors for ``user_id``."""
        return bool(self.model.user_positions(np.array([user_id], dtype=np.int64))[0] >= 0)

    def recommend(
        self,
        user_id: int,
        *,
        k: int,
        exclude: tuple[int, ...],
        include_categories: tuple[str, ...] = (),
        exclude_categories: tuple[str, ...] = (),
    ) -> Recommendation:
        """Top ``k`` for one user (CPU-bound numpy: a few microseconds to a few milliseconds).

        :class:`~fallback_mf.service.scoring.CategoriesUnavailable` for a category filter on
        an artifact without item categories."""
        items, scores = self.model.recommend_one(
            user_id,
            k=k,
            exclude=exclude,
            include_categories=include_categories,
            exclude_categories=exclude_categories,
        )
        return Recommendation(items, scores, self.knows(user_id), self.version)


@dataclass(frozen=True)
class ServedData:
    """The data set this service serves; an artifact trained on other data is refused."""

    dataset: str
    checksum: str | None = None

    def mismatch(self, meta: dict[str, Any]) -> str | None:
        """None when ``meta`` (an artifact's metadata) says it was trained on this data."""
        data = meta.get("data") or {}
        if data.get("dataset") != self.dataset:
            return (
                f"it was trained on {data.get('dataset')!r}, this service serves {self.dataset!r}"
            )
        if self.checksum and data.get("checksum") != self.checksum:
            return (
                f"it was trained on another build of {self.dataset!r} (checksum "
                f"{str(data.get('checksum'))[:12]}, served {self.checksum[:12]})"
            )
        return None


class ModelStore:
    """The current model, swapped atomically by :meth:`reload`.

    ``pinned_version`` set: that version only (reload re-reads it on demand). Unset: ``latest``.
    """

    def __init__(
        self,
        *,
        artifacts_dir: Path,
        pinned_version: str | None = None,
        loader: Loader = load_artifact,
        served_data: ServedData | None = None,
    ) -> None:
        self.artifacts_dir = artifacts_dir
        self.pinned_version = pinned_version
        self._loader = loader
        self.served_data = served_data
        self._current: LoadedModel | None = None
        self._lock = asyncio.Lock()  # one reload at a time; requests never take it
        self.on_swap: Callable[[LoadedModel], None] | None = None

    @property
    def current(self) -> LoadedModel:
        """The model to score with; :class:`ModelNotReady` before the first successful load."""
        model = self._current
        if model is None:
            raise ModelNotReady(f"no ALS model loaded yet from {self.artifacts_dir}")
        return model

    @property
    def ready(self) -> bool:
        return self._current is not None

    def wanted_version(self) -> str:
        """The version to serve now: the pinned one, or what ``latest`` names."""
        if self.pinned_version:
            return self.pinned_version
        try:
            return resolve_latest(self.artifacts_dir).name
        except ArtifactFormatError as exc:
            raise ReloadFailed(str(exc)) from exc

    async def reload(
        self, version: str | None = None, *, force: bool = True
    ) -> tuple[str, str, bool]:
        """Load ``version`` (default: :meth:`wanted_version`) and swap it in.

        Returns ``(previous_version, current_version, changed)``. ``force=False`` skips the load
        when that version is already served (the periodic check). On failure the old model keeps
        serving and :class:`ReloadFailed` says why.
        """
        async with self._lock:
            previous = self._current.version if self._current else ""
            target = version or self.wanted_version()
            if not is_version_name(target):
                raise ReloadFailed(f"not a version folder name: {target!r}")
            if not force and target == previous:
                return previous, previous, False
            directory = self.artifacts_dir / target
            started = time.perf_counter()
            try:
                if self.served_data is not None:  # before the (large) arrays are read
                    mismatch = self.served_data.mismatch(read_metadata(directory))
                    if mismatch:
                        raise ReloadFailed(f"refused ALS artifact {directory}: {mismatch}")
                model = await asyncio.to_thread(self._loader, directory)
            except _LOAD_ERRORS as exc:
                raise ReloadFailed(f"cannot load ALS artifact {directory}: {exc}") from exc
            loaded = LoadedModel(
                model=model, version=target, directory=directory, loaded_at=time.time()
            )
            self._current = loaded  # the atomic swap: one reference assignment
            if self.on_swap is not None:
                self.on_swap(loaded)
            logger.info(
                "serving ALS model %s (%d users, %d items), loaded in %.0f ms (previous: %s)",
                target,
                model.n_users,
                model.n_items,
                1000 * (time.perf_counter() - started),
                previous or "none",
            )
            return previous, target, target != previous
