"""In-process stand-ins for the upstreams, for faults real processes cannot produce on demand
(an exact error on the Nth call, a hang of a chosen length, a rule-breaking answer) and for
fast API tests. The integration suite runs the real Triton, MF service, Redis and Feast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from gateway.components import Components, build_breaker, chain_config
from gateway.errors import UnknownUser, UpstreamError, UpstreamTimeout
from gateway.resilience.chain import FallbackChain
from gateway.tiers.features import FeaturesTimedOut, FeaturesUnavailable
from gateway.tiers.popular import PopularList
from gateway.tiers.types import NO_FILTER, CategoryFilter, PrimaryRow, TierResult, UserFeatures

N_ITEMS = 200
CATALOGUE = list(range(N_ITEMS))  # item i has popularity N_ITEMS - i
KNOWN_USERS = range(1, 51)


def seen_of(user_id: int) -> tuple[int, ...]:
    """Each known user has seen the three most popular items shifted by its id."""
    return tuple((user_id + j) % N_ITEMS for j in range(3))


N_CATEGORIES = 4


def category_of(item: int) -> str:
    """Item i's category: ``c{i % 4}`` (50 items each)."""
    return f"c{item % N_CATEGORIES}"


def popular_list() -> PopularList:
    return PopularList.from_arrays(
        items=CATALOGUE,
        counts=[N_ITEMS - i for i in CATALOGUE],
        version="v-test",
        categories={i: category_of(i) for i in CATALOGUE},
    )


def _rank(
    k: int, exclude: Sequence[int], *, reverse: bool, categories: CategoryFilter = NO_FILTER
) -> TierResult:
    skip = set(exclude)
    order = reversed(CATALOGUE) if reverse else iter(CATALOGUE)
    items = [i for i in order if i not in skip and categories.allows(category_of(i))][:k]
    return TierResult(
        item_ids=items, scores=[1.0 - n / 1000 for n in range(len(items))], model_version=""
    )


class FakeFeatures:
    """Features for KNOWN_USERS; ``mode``: ok | fail | hang."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls = 0
        self.many_calls = 0

    async def read(self, user_id: int, *, timeout_s: float) -> UserFeatures | None:
        self.calls += 1
        if self.mode == "fail":
            raise FeaturesUnavailable("feature read failed: connection refused")
        if self.mode == "hang":
            try:
                await asyncio.wait_for(asyncio.Event().wait(), timeout_s)
            except TimeoutError as exc:
                raise FeaturesTimedOut("feature read timed out") from exc
        if user_id not in KNOWN_USERS:
            return None
        return UserFeatures(user_id=user_id, interaction_count=3, seen_items=seen_of(user_id))

    async def read_many(
        self, user_ids: Sequence[int], *, timeout_s: float
    ) -> dict[int, UserFeatures | None]:
        """The batch read: one call (counted in ``many_calls``) for every user."""
        self.many_calls += 1
        self.calls -= 1  # counted once below, not per user
        first = await self.read(-1, timeout_s=timeout_s)  # the mode's failure or hang, once
        assert first is None
        return {
            u: UserFeatures(user_id=u, interaction_count=3, seen_items=seen_of(u))
            if u in KNOWN_USERS
            else None
            for u in user_ids
        }


class FakeTier:
    """A remote tier; ``mode``: ok | error | hang | bad (returns an excluded item)."""

    def __init__(self, name: str, *, reverse: bool) -> None:
        self.name = name
        self.reverse = reverse
        self.mode = "ok"
        self.calls = 0
        self.last_headers: Mapping[str, str] = {}
        self.last_categories: CategoryFilter = NO_FILTER

    async def ready(self, *, timeout_s: float = 0.5) -> bool:
        return self.mode == "ok"

    async def close(self) -> None:
        return None

    async def _ask(
        self, k: int, exclude: Sequence[int], timeout_s: float, categories: CategoryFilter
    ) -> TierResult:
        # The filter only when there is one: tests replace ``_answer`` with 3-argument spies.
        if categories:
            return await self._answer(k, exclude, timeout_s, categories)
        return await self._answer(k, exclude, timeout_s)

    async def _answer(
        self,
        k: int,
        exclude: Sequence[int],
        timeout_s: float,
        categories: CategoryFilter = NO_FILTER,
    ) -> TierResult:
        self.calls += 1
        self.last_categories = categories
        if self.mode == "error":
            raise UpstreamError(f"{self.name} failed")
        if self.mode == "hang":
            try:
                await asyncio.wait_for(asyncio.Event().wait(), timeout_s)
            except TimeoutError as exc:
                raise UpstreamTimeout(f"{self.name} timed out") from exc
        # "unfiltered": a model that ignores the category filter (a version exported before it)
        result = _rank(
            k,
            exclude,
            reverse=self.reverse,
            categories=NO_FILTER if self.mode == "unfiltered" else categories,
        )
        if self.mode == "bad":
            result.item_ids[0] = exclude[0] if exclude else result.item_ids[1]
        return TierResult(result.item_ids, result.scores, model_version=f"{self.name}/7")


class FakePrimary(FakeTier):
    def __init__(self) -> None:
        super().__init__("two_tower", reverse=True)
        self.many_calls = 0
        self.last_rows = 0
        self.bad_users: set[int] = set()

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
    ) -> TierResult:
        self.last_headers = dict(headers or {})
        return await self._ask(k, exclude, timeout_s, categories)

    async def recommend_many(
        self,
        rows: Sequence[PrimaryRow],
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        version: int | None = None,
    ) -> list[TierResult | Exception]:
        """One call for many rows (``many_calls``, ``last_rows``); ``bad_users``: rows whose
        answer repeats an item (the answer check refuses those rows only)."""
        self.many_calls += 1
        self.last_rows = len(rows)
        self.last_headers = dict(headers or {})
        answers: list[TierResult | Exception] = []
        for i, row in enumerate(rows):
            if i == 0:
                answer = await self._ask(row.k, row.exclude, timeout_s, row.categories)
            else:  # the mode (error, hang) applies to the call, once
                result = _rank(row.k, row.exclude, reverse=True, categories=row.categories)
                answer = TierResult(result.item_ids, result.scores, model_version="two_tower/7")
            if row.features.user_id in self.bad_users and len(answer.item_ids) > 1:
                answer.item_ids[1] = answer.item_ids[0]
            answers.append(answer)
        return answers


class FakeFallback(FakeTier):
    def __init__(self) -> None:
        super().__init__("als", reverse=False)

    async def recommend(
        self,
        user_id: int,
        *,
        k: int,
        exclude: Sequence[int],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        categories: CategoryFilter = NO_FILTER,
    ) -> TierResult:
        self.last_headers = dict(headers or {})
        if self.mode == "ok" and user_id not in KNOWN_USERS:
            self.calls += 1
            raise UnknownUser(f"user {user_id} unknown")
        return await self._ask(k, exclude, timeout_s, categories)


class Fakes:
    """The set of fakes one app uses, and the components factory that wires them."""

    def __init__(self) -> None:
        self.features = FakeFeatures()
        self.primary = FakePrimary()
        self.fallback = FakeFallback()
        self.popular = popular_list()
        self.components: Components | None = None

    async def factory(self, settings, metrics) -> Components:
        chain = FallbackChain(
            config=chain_config(settings),
            popular=self.popular,
            breaker=build_breaker(settings, metrics),
            metrics=metrics,
            features=self.features,
            primary=self.primary,
            fallback=self.fallback,
        )
        self.components = Components(chain=chain, primary=self.primary, fallback=self.fallback)  # type: ignore[arg-type]
        return self.components
