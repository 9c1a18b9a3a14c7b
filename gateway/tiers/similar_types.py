"""Shared types of the similar-items tiers (``GET /v1/items/{item_id}/similar``): the call
protocol the similar chain expects of a remote tier, and the error a tier raises for an item its
model does not know."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gateway.errors import GatewayError, UpstreamError
from gateway.tiers.types import TierResult


class UnknownItem(UpstreamError):
    """The tier's model does not know the item (a valid answer, not a failure of the tier)."""

    status_code = 404
    code = "unknown_item"


class ItemNotFound(GatewayError):
    """The catalogue does not know the item: the answer is 404, never a list of other items."""

    status_code = 404
    code = "unknown_item"


class SimilarTier(Protocol):
    async def similar(
        self,
        item_id: int,
        *,
        k: int,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> TierResult: ...
