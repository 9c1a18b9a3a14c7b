"""The last-resort tier: popular items held in memory, refreshed from the ALS artifacts.

Reads ``popular_items.npy`` / ``popular_counts.npy`` of the ALS version that ``latest`` points
at (``fallback_mf.artifact_format``: the file names and the one ``latest`` rule), plus the id maps and each training user's items (memory-mapped,
so a large data set costs page cache, not heap), so popular answers skip what the user has seen
even when the feature store is down. ``refresh`` reloads when ``latest`` moved; the swap is one
attribute assignment, so requests never see half a list.

Each item's category (``item_categories.npy`` of the same version) serves the category filter:
the popular tier filters inside its ranked list (the first k allowed items, not the first k
items minus the disallowed ones), and the chain checks every remote tier's answer against the
filter with it (``outside``). A version without item categories (trained before the filter)
cannot do either: ``has_categories`` is False and the chain refuses a filtered request
(``FiltersUnavailable``, 503) rather than serve an answer nobody checked.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cascade.runtime.ranking import first_not_in
from fallback_mf import artifact_format as fmt
from gateway.tiers.types import NO_FILTER, CategoryFilter, TierResult

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
    # The category filter's data (None: the version records no item categories):
    category_names: np.ndarray | None = None  # unicode, sorted, unique
    known_category: np.ndarray | None = None  # per known item: index into category_names
    items_category: np.ndarray | None = None  # per ranked item: index (-1: not a known item)

    @classmethod
    def load(cls, directory: Path) -> PopularSnapshot:
        items, counts = fmt.read_popular(directory)
        seen = fmt.read_seen(directory, mmap=True)
        known = fmt.read_item_ids(directory).astype(np.int64)
        return cls(
            version=directory.name,
            items=items,
            counts=counts,
            known_items=known,
            user_ids=seen.user_ids,
            seen_indptr=seen.indptr,
            seen_indices=seen.indices,
        ).with_categories(fmt.read_item_categories(directory))

    def with_categories(self, categories: np.ndarray | None) -> PopularSnapshot:
        """This snapshot with each known item's category name (``known_items`` order)."""
        if categories is None:
            return self
        if categories.shape != self.known_items.shape:
            raise ValueError("item categories do not match the item ids")
        names, inverse = np.unique(np.asarray(categories, dtype=str), return_inverse=True)
        known_category = inverse.astype(np.int64).reshape(-1)
        pos = _positions(self.known_items, self.items)
        items_category = np.where(pos >= 0, known_category[np.maximum(pos, 0)], -1)
        return dataclasses.replace(
            self,
            category_names=names,
            known_category=known_category,
            items_category=items_category.astype(np.int64),
        )

    def allowed_names(self, categories: CategoryFilter) -> np.ndarray:
        """Boolean per category name: inside the filter."""
        assert self.category_names is not None
        names = self.category_names
        allowed = (
            np.isin(names, list(categories.include))
            if categories.include
            else np.ones(len(names), dtype=bool)
        )
        if categories.exclude:
            allowed &= ~np.isin(names, list(categories.exclude))
        return allowed

    def seen(self, user_id: int) -> np.ndarray:
        """Item ids the user interacted with in the training data (empty when unknown)."""
        pos = int(np.searchsorted(self.user_ids, user_id))
        if pos >= len(self.user_ids) or int(self.user_ids[pos]) != user_id:
            return np.empty(0, dtype=np.int64)
        idx = self.seen_indices[int(self.seen_indptr[pos]) : int(self.seen_indptr[pos + 1])]
        return self.known_items[np.asarray(idx, dtype=np.int64)]


def _positions(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each of ``ids`` in the sorted ``sorted_ids``, -1 when absent."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1).astype(np.int64)


class PopularList:
    """The in-memory popular list of the ALS artifacts under ``artifacts_dir``."""

    def __init__(self, *, artifacts_dir: Path) -> None:
        self.artifacts_dir = artifacts_dir
        self.snapshot: PopularSnapshot | None = None

    @classmethod
    def from_arrays(
        cls,
        *,
        items: Iterable[int],
        counts: Iterable[int],
        version: str = "test",
        categories: Mapping[int, str] | None = None,
    ) -> PopularList:
        """A list built in memory (unit tests, tools); knows no users. ``categories``: each
        item's category name (missing: unknown), or None for a list without categories."""
        pop = cls(artifacts_dir=Path("."))
        item_arr = np.asarray(list(items), dtype=np.int64)
        snapshot = PopularSnapshot(
            version=version,
            items=item_arr,
            counts=np.asarray(list(counts), dtype=np.int64),
            known_items=np.sort(item_arr),
            user_ids=np.empty(0, np.int64),
            seen_indptr=np.zeros(1, np.int64),
            seen_indices=np.empty(0, np.int64),
        )
        if categories is not None:
            known = snapshot.known_items.tolist()
            snapshot = snapshot.with_categories(
                np.asarray([categories.get(i, "") for i in known], dtype=str)
            )
        pop.snapshot = snapshot
        return pop

    @property
    def loaded(self) -> bool:
        return self.snapshot is not None

    @property
    def has_categories(self) -> bool:
        """Whether the loaded version knows each item's category (the filter needs it)."""
        return self.snapshot is not None and self.snapshot.category_names is not None

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

    def available(self, skip: set[int], categories: CategoryFilter = NO_FILTER) -> int | None:
        """How many known items (inside ``categories``) are not in ``skip`` (None when nothing
        is loaded, or a filter but no categories)."""
        snap = self.snapshot
        if snap is None:
            return None
        known = snap.known_items
        if not categories:
            return len(known) - int(self.known(list(skip)).sum()) if skip else len(known)
        if snap.known_category is None:
            return None
        inside = snap.allowed_names(categories)[snap.known_category]
        if skip:
            pos = _positions(known, np.fromiter(skip, dtype=np.int64, count=len(skip)))
            pos = pos[pos >= 0]
            return int(inside.sum()) - int(inside[pos].sum())
        return int(inside.sum())

    def outside(self, item_ids: list[int], categories: CategoryFilter) -> np.ndarray:
        """Boolean mask: which ids are outside ``categories`` (an unknown id, or every id when
        the loaded version has no categories, is outside any filter)."""
        snap = self.snapshot
        if not categories:
            return np.zeros(len(item_ids), dtype=bool)
        if snap is None or snap.known_category is None:
            return np.ones(len(item_ids), dtype=bool)
        pos = _positions(snap.known_items, np.asarray(item_ids, dtype=np.int64))
        allowed = snap.allowed_names(categories)
        inside = np.where(pos >= 0, allowed[snap.known_category[np.maximum(pos, 0)]], False)
        return ~inside

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

    def recommend(
        self,
        user_id: int,
        *,
        k: int,
        exclude: Iterable[int],
        categories: CategoryFilter = NO_FILTER,
    ) -> TierResult:
        """The k most popular items not in ``exclude``, not seen by the user in training and
        inside ``categories`` (filtered inside the ranking: the first k allowed items). With a
        filter on a version without categories: nothing (the chain refuses that request
        before it gets here)."""
        snap = self.snapshot
        if snap is None:
            return TierResult(item_ids=[], scores=[], model_version="popular/none")
        items, counts = snap.items, snap.counts
        if categories:
            if snap.items_category is None or snap.category_names is None:
                items, counts = items[:0], counts[:0]
            else:
                allowed = np.append(snap.allowed_names(categories), False)  # [-1]: unknown id
                inside = allowed[snap.items_category]
                items, counts = items[inside], counts[inside]
        skip = np.union1d(np.fromiter(exclude, dtype=np.int64), snap.seen(user_id))
        keep = first_not_in(items, skip, k)
        return TierResult(
            item_ids=[int(i) for i in items[keep]],
            scores=[float(c) for c in counts[keep]],
            model_version=f"popular/{snap.version}",
        )
