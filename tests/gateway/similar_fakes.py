"""In-process stand-ins for the similar-items tiers (``gateway.similar``), on the catalogue of
``tests/gateway/fakes.py`` (items 0..199). The integration suite runs the real Triton model and MF
service (tests/integration/test_similar_items.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from gateway.components import Components
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.similar import SimilarChain, build_similar_breaker
from gateway.tiers.similar_types import UnknownItem
from gateway.tiers.types import TierResult
from tests.gateway.fakes import CATALOGUE, Fakes

TWO_TOWER_KNOWS = range(0, 150)  # items 150..199: newer than the Two-Tower's training
ALS_KNOWS = range(0, 180)  # items 180..199: unknown to both models (popular answers)


def neighbours(item_id: int, k: int) -> tuple[list[int], list[float]]:
    """The k catalogue items nearest by id distance, never ``item_id``, best first."""
    others = sorted((i for i in CATALOGUE if i != item_id), key=lambda i: (abs(i - item_id), i))
    items = others[:k]
    return items, [0.9 - n / 1000 for n in range(len(items))]


class FakeSimilarTier:
    """A remote similar-items tier; ``mode``: ok | error | hang | bad (answers the query item) |
    crash (an unexpected exception)."""

    def __init__(self, name: str, knows: range) -> None:
        self.name = name
        self.knows = knows
        self.mode = "ok"
        self.calls = 0
        self.last_headers: Mapping[str, str] = {}
        self.last_timeout_s = 0.0

    async def ready(self, *, timeout_s: float = 0.5) -> bool:
        return self.mode == "ok"

    async def close(self) -> None:
        return None

    async def similar(
        self,
        item_id: int,
        *,
        k: int,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> TierResult:
        self.calls += 1
        self.last_headers = dict(headers or {})
        self.last_timeout_s = timeout_s
        if self.mode == "error":
            raise UpstreamError(f"{self.name} failed")
        if self.mode == "crash":
            raise KeyError("a bug inside the client")
        if self.mode == "hang":
            try:
                await asyncio.wait_for(asyncio.Event().wait(), timeout_s)
            except TimeoutError as exc:
                raise UpstreamTimeout(f"{self.name} timed out") from exc
        if item_id not in self.knows:
            raise UnknownItem(f"{self.name} does not know item {item_id}")
        items, scores = neighbours(item_id, k)
        if self.mode == "bad":
            items[0] = item_id
        return TierResult(items, scores, model_version=f"{self.name}/3")


class SimilarFakes(Fakes):
    """``Fakes`` plus the similar-items tiers, wired into ``Components.similar``."""

    def __init__(self) -> None:
        super().__init__()
        self.similar_primary = FakeSimilarTier("two_tower_similar", TWO_TOWER_KNOWS)
        self.similar_fallback = FakeSimilarTier("als", ALS_KNOWS)

    async def factory(self, settings, metrics) -> Components:
        components = await super().factory(settings, metrics)
        components.similar = SimilarChain(
            config=components.chain.config,
            popular=self.popular,
            breaker=build_similar_breaker(settings, metrics),
            metrics=metrics,
            primary=self.similar_primary,
            fallback=self.similar_fallback,
        )
        return components
