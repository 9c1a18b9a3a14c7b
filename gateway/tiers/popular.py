"""The last-resort tier: popular items held in memory, refreshed from the ALS artifacts.

Reads ``popular_items.npy`` / ``popular_counts.npy`` of the ALS version that ``latest`` points
at (``fallback_mf.artifact_format``: the file names and the one ``latest`` rule), plus the id maps and each training user's items (memory-mapped,
so a large data set costs page cache, not heap), so popular answers skip what the user has seen
even when the feature store is down. ``refresh`` reloads when ``latest`` moved; the swap is one
attribute assignment, so requests never see half a list.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cascade.runtime.ranking import first_not_in
from fallback_mf import artifact_format as fmt
from gateway.tiers.types import TierResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PopularSnapshot:
    """One loaded version: ranked items, their counts, and the training users' items."""

    version: str
    items: np.ndarray  # int64, most popular first
    counts: np.ndarray  # int64
    known_items: np.ndarray  # int64, sorted: every item id the models know
    user_ids: np.ndarray  # int64, sorted
    seen_indptr: np.ndarray
    seen_indices: np.ndarray  # item indices into known_items

    @classmethod
    def load(cls, directory: Path) -> PopularSnapshot:
        items, counts = fmt.read_popular(directory)
        seen = fmt.read_seen(directory, mmap=True)
        return cls(
            version=directory.name,
            items=items,
            counts=counts,
            known_items=fmt.read_item_ids(directory).astype(np.int64),
            user_ids=seen.user_ids,
            seen_indptr=seen.indptr,
            seen_indices=seen.indices,
        )

    def seen(self, user_id: int) -> np.ndarray:
        """Item ids the user interacted with in the training data (empty when unknown)."""
        pos = int(np.searchsorted(self.user_ids, user_id))
        if pos >= len(self.user_ids) or int(self.user_ids[pos]) != user_id:
            return np.empty(0, dtype=np.int64)
        idx = self.seen_indices[int(self.seen_indptr[pos]) : int(self.seen_indptr[pos + 1])]
        return self.known_items[np.asarray(idx, dtype=np.int64)]


class PopularList:
    """The in-memory popular list of the ALS artifacts under ``artifacts_dir``."""

    def __init__(self, *, artifacts_dir: Path) -> None:
        self.artifacts_dir = artifacts_dir
        self.snapshot: PopularSnapshot | None = None

    @classmethod
    def from_arrays(
        cls, *, items: Iterable[int], counts: Iterable[int], version: str = "test"
    ) -> PopularList:
        """A list built in memory (unit tests, tools); knows no users."""
        pop = cls(artifacts_dir=Path("."))
        item_arr = np.asarray(list(items), dtype=np.int64)
        pop.snapshot = PopularSnapshot(
            version=version,
            items=item_arr,
            counts=np.asarray(list(counts), dtype=np.int64),
            known_items=np.sort(item_arr),
            user_ids=np.empty(0, np.int64),
            seen_indptr=np.zeros(1, np.int64),
            seen_indices=np.empty(0, np.int64),
        )
        return pop

    @property
    def loaded(self) -> bool:
        return self.snapshot is not None

    @property
    def version(self) -> str | None:
        return self.snapshot.version if self.snapshot else None

    def refresh(self) -> bool:
        """Load the version ``latest`` points at if it is new; True when it changed. Blocking I/O."""
        try:
            directory = fmt.resolve_latest(fmt.als_root(self.artifacts_dir))
        except (fmt.ArtifactFormatError, OSError) as exc:
            if self.snapshot is None:
                logger.warning("popular list not loaded: %s", exc)
            return False
        if self.snapshot is not None and self.snapshot.version == directory.name:
            return False
        try:
            snapshot = PopularSnapshot.load(directory)
        except (OSError, ValueError) as exc:
            logger.error("popular list %s unreadable, keeping %s: %s", directory, self.version, exc)
            return False
        self.snapshot = snapshot
        logger.info(
            "popular list: loaded %d items from ALS version %s",
            len(snapshot.items),
            snapshot.version,
        )
        return True

    def available(self, skip: set[int]) -> int | None:
        """How many known items are not in ``skip`` (None when nothing is loaded)."""
        if self.snapshot is None:
            return None
        known = self.snapshot.known_items
        return len(known) - int(self.known(list(skip)).sum()) if skip else len(known)

    def known(self, item_ids: list[int]) -> np.ndarray:
        """Boolean mask: which ids the models know (all True when nothing is loaded)."""
        if self.snapshot is None:
            return np.ones(len(item_ids), dtype=bool)
        ids = np.asarray(item_ids, dtype=np.int64)
        known = self.snapshot.known_items
        pos = np.minimum(np.searchsorted(known, ids), max(len(known) - 1, 0))
        return (known[pos] == ids) if len(known) else np.zeros(len(ids), dtype=bool)

    def seen(self, user_id: int) -> np.ndarray:
        return self.snapshot.seen(user_id) if self.snapshot else np.empty(0, dtype=np.int64)

    def recommend(self, user_id: int, *, k: int, exclude: Iterable[int]) -> TierResult:
        """The k most popular items not in ``exclude`` and not seen by the user in training."""
        snap = self.snapshot
        if snap is None:
            return TierResult(item_ids=[], scores=[], model_version="popular/none")
        skip = np.union1d(np.fromiter(exclude, dtype=np.int64), snap.seen(user_id))
        keep = first_not_in(snap.items, skip, k)
        return TierResult(
            item_ids=[int(i) for i in snap.items[keep]],
            scores=[float(c) for c in snap.counts[keep]],
            model_version=f"popular/{snap.version}",
        )
