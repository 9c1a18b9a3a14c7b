"""Shared types of the tiers: a user's online features, one tier's answer, and the call
protocols the chain expects of the feature source and the remote tiers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class UserFeatures:
    """A user's online features (Feast ``user_profile`` + ``user_activity``)."""

    user_id: int
    age_bucket: int = -1
    country: str = ""
    interaction_count: int = 0
    recent_items: tuple[int, ...] = ()
    seen_items: tuple[int, ...] = ()


@dataclass(frozen=True)
class CategoryFilter:
    """A request's category filter: the answer holds only items of an ``include`` category
    (when any is named) and none of an ``exclude`` category. An item of unknown category never
    matches ``include`` and always passes ``exclude``. Empty: no filter (falsy)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> CategoryFilter:
        """Distinct names, in the order given."""
        return cls(tuple(dict.fromkeys(include)), tuple(dict.fromkeys(exclude)))

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def allows(self, category: str) -> bool:
        if self.include and category not in self.include:
            return False
        return category not in self.exclude


NO_FILTER = CategoryFilter()


@dataclass(frozen=True)
class TierResult:
    """Items best first with their scores, and the version of the model that produced them."""

    item_ids: list[int]
    scores: list[float]
    model_version: str


class FeatureSource(Protocol):
    async def read(self, user_id: int, *, timeout_s: float) -> UserFeatures | None: ...


@dataclass(frozen=True)
class PrimaryRow:
    """One user of a multi-row primary call (the batch route): what a single call takes."""

    features: UserFeatures
    k: int
    exclude: Sequence[int]
    categories: CategoryFilter = NO_FILTER


class BatchFeatureSource(Protocol):
    """A feature source that reads many users in one round trip (the batch route)."""

    async def read_many(
        self, user_ids: Sequence[int], *, timeout_s: float
    ) -> dict[int, UserFeatures | None]: ...


class BatchPrimary(Protocol):
    """A primary that answers many users in one call: one answer per row, in order, each a
    decoded result or the exception that row's answer broke (a whole-call failure raises)."""

    async def recommend_many(
        self,
        rows: Sequence[PrimaryRow],
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        version: int | None = None,
    ) -> list[TierResult | Exception]: ...


class FilteredPrimary(Protocol):
    """A primary that applies a category filter inside its top-k. The chain passes
    ``categories`` only when the request has a filter (and ``version`` only when a rollout or a
    pin names one), so a ``PrimaryTier`` without them keeps serving unfiltered requests."""

    async def recommend(
        self,
        features: UserFeatures,
        *,
        k: int,
        exclude: Sequence[int],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        version: int | None = None,
        categories: CategoryFilter = NO_FILTER,
    ) -> TierResult: ...


class FilteredFallback(Protocol):
    """A fallback that applies a category filter inside its top-k (passed only when set)."""

    async def recommend(
        self,
        user_id: int,
        *,
        k: int,
        exclude: Sequence[int],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        categories: CategoryFilter = NO_FILTER,
    ) -> TierResult: ...


class PrimaryTier(Protocol):
    async def recommend(
        self,
        features: UserFeatures,
        *,
        k: int,
        exclude: Sequence[int],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> TierResult: ...


class FallbackTier(Protocol):
    async def recommend(
        self,
        user_id: int,
        *,
        k: int,
        exclude: Sequence[int],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> TierResult: ...


class VersionedPrimary(Protocol):
    """A primary that can address one model version (Triton's ``model_version``): what the
    rollout needs. The chain passes ``version`` only when a rollout or a pin names one, so a
    ``PrimaryTier`` without it keeps working while no rollout runs."""

    async def recommend(
        self,
        features: UserFeatures,
        *,
        k: int,
        exclude: Sequence[int],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        version: int | None = None,
    ) -> TierResult: ...
