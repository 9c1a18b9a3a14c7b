"""Single-user ALS scoring on the artifact's plain arrays: what the MF service runs per request.

Imports only numpy and :mod:`fallback_mf.artifact_format`: the service never loads pandas or
the training code. It is the one single-user path (evaluation uses the batch
``fallback_mf.model.AlsModel.recommend``; a test holds the two equal): a known user gets ``user_factors[u] @ item_factors.T`` with their training
items and the ``exclude`` ids masked, top ``k`` by ``np.argpartition``; an unknown user gets the
most popular items not in ``exclude``, scored by their interaction counts.

A category filter (``include`` / ``exclude`` category names) masks the items outside it before
the top-k, for known and unknown users alike, so k items come back whenever k allowed items are
left. It needs the artifact's ``item_categories``; an artifact trained before them raises
:class:`CategoriesUnavailable` for a filtered request (the service answers 409).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from cascade.runtime.ranking import first_not_in
from fallback_mf.artifact_format import (
    ITEM_CATEGORIES,
    ITEM_FACTORS,
    ITEM_IDS,
    POPULAR_COUNTS,
    POPULAR_ITEMS,
    SEEN_INDICES,
    SEEN_INDPTR,
    USER_FACTORS,
    USER_IDS,
)


class CategoriesUnavailable(ValueError):
    """A category filter on an artifact that records no item categories."""


def sorted_positions(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each of ``ids`` in the sorted unique ``sorted_ids``, -1 when absent (int64)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class AlsScorer:
    """An ALS artifact as the arrays one-user scoring needs.

    ``item_factors_t`` is ``item_factors.T`` as its own C-contiguous array, made at load time:
    ``u @ item_factors_t`` runs about 40% faster than ``item_factors @ u`` (measured).
    """

    user_factors: np.ndarray  # float32 (n_users, factors)
    item_factors_t: np.ndarray  # float32 (factors, n_items), C-contiguous
    user_ids: np.ndarray  # int64, sorted: user index -> id
    item_ids: np.ndarray  # int64, sorted: item index -> id
    seen_indptr: np.ndarray  # int64 (n_users + 1,)
    seen_indices: np.ndarray  # int64 item indices
    popular_items: np.ndarray  # int64 item ids, most popular first
    popular_scores: np.ndarray  # float32: their interaction counts
    # The category filter's data (None: the artifact records no item categories):
    category_names: np.ndarray | None = None  # unicode, sorted, unique
    item_category: np.ndarray | None = None  # int64 per item index: index into category_names
    popular_positions: np.ndarray | None = None  # int64 item index of each popular item

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> AlsScorer:
        """Build from a version folder's arrays (``artifact_format.read_checked``)."""
        names = item_category = positions = None
        if ITEM_CATEGORIES in arrays:
            names, inverse = np.unique(arrays[ITEM_CATEGORIES], return_inverse=True)
            item_category = inverse.astype(np.int64).reshape(-1)
            positions = sorted_positions(
                arrays[ITEM_IDS].astype(np.int64, copy=False),
                arrays[POPULAR_ITEMS].astype(np.int64, copy=False),
            )
        return cls(
            user_factors=arrays[USER_FACTORS].astype(np.float32, copy=False),
            item_factors_t=np.ascontiguousarray(
                arrays[ITEM_FACTORS].astype(np.float32, copy=False).T
            ),
            user_ids=arrays[USER_IDS].astype(np.int64, copy=False),
            item_ids=arrays[ITEM_IDS].astype(np.int64, copy=False),
            seen_indptr=arrays[SEEN_INDPTR].astype(np.int64, copy=False),
            seen_indices=arrays[SEEN_INDICES].astype(np.int64, copy=False),
            popular_items=arrays[POPULAR_ITEMS].astype(np.int64, copy=False),
            popular_scores=arrays[POPULAR_COUNTS].astype(np.int64).astype(np.float32),
            category_names=names,
            item_category=item_category,
            popular_positions=positions,
        )

    @property
    def n_users(self) -> int:
        return int(self.user_factors.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_factors_t.shape[1])

    def user_positions(self, user_ids: np.ndarray) -> np.ndarray:
        """Row index of each original user id, -1 when unknown."""
        return sorted_positions(self.user_ids, user_ids)

    def item_positions(self, item_ids: np.ndarray) -> np.ndarray:
        """Row index of each original item id, -1 when unknown."""
        return sorted_positions(self.item_ids, item_ids)

    @property
    def has_categories(self) -> bool:
        return self.item_category is not None

    def outside(
        self, include: Collection[str] = (), exclude: Collection[str] = ()
    ) -> np.ndarray | None:
        """Boolean per item index: True where the item is outside the category filter (an item
        of unknown category never matches ``include``); None when there is no filter."""
        if not include and not exclude:
            return None
        if self.category_names is None or self.item_category is None:
            raise CategoriesUnavailable(
                "this ALS artifact records no item categories (trained before the category "
                "filter): train it again to filter"
            )
        names = self.category_names
        allowed = np.isin(names, list(include)) if include else np.ones(len(names), dtype=bool)
        if exclude:
            allowed &= ~np.isin(names, list(exclude))
        outside: np.ndarray = ~allowed[self.item_category]
        return outside

    def recommend_one(
        self,
        user_id: int,
        *,
        k: int,
        exclude: Iterable[int] = (),
        include_categories: Collection[str] = (),
        exclude_categories: Collection[str] = (),
    ) -> tuple[list[int], list[float]]:
        """Up to ``k`` item ids and scores, best first; never padded.

        Fewer than ``k`` come back only when the catalogue has fewer items left for the user
        (in the allowed categories, when a category filter is given).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        excl = np.fromiter(exclude, dtype=np.int64)
        outside = self.outside(include_categories, exclude_categories)
        pos = int(self.user_positions(np.array([user_id], dtype=np.int64))[0])
        if pos < 0:
            return self._popular(k, excl, outside)
        scores = self.user_factors[pos] @ self.item_factors_t
        scores[self.seen_indices[self.seen_indptr[pos] : self.seen_indptr[pos + 1]]] = -np.inf
        if len(excl):
            cols = self.item_positions(excl)
            scores[cols[cols >= 0]] = -np.inf
        if outside is not None:
            scores[outside] = -np.inf
        cand = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        cand = cand[np.argsort(-scores[cand], kind="stable")]
        cand = cand[np.isfinite(scores[cand])]
        return self.item_ids[cand].tolist(), scores[cand].tolist()

    def _popular(
        self, k: int, exclude: np.ndarray, outside: np.ndarray | None = None
    ) -> tuple[list[int], list[float]]:
        """The first ``k`` ranked items not in ``exclude`` (and inside the category filter),
        scored by their counts."""
        items, scores = self.popular_items, self.popular_scores
        if outside is not None and self.popular_positions is not None:
            positions = self.popular_positions
            inside = positions >= 0
            inside[inside] = ~outside[positions[inside]]
            items, scores = items[inside], scores[inside]
        keep = first_not_in(items, exclude, k)
        return items[keep].tolist(), scores[keep].tolist()
