"""The similar-items fallback: the MF service's ``GET /v1/items/{item_id}/similar`` over HTTP.

Uses the ``MfFallback`` client's connection pool (httpx on an aiohttp transport, keep-alive),
with a timeout per call. Wire format: ``fallback_mf.similar_schemas``. httpx errors become
``UpstreamTimeout`` / ``UpstreamUnavailable`` / ``UpstreamError``; a 404 whose JSON code is
``unknown_item`` becomes ``UnknownItem`` (the ALS model does not know the item); a body that is not
that schema's JSON for the item asked about (non-finite scores, ids outside int64, another item)
becomes ``InvalidAnswer`` (``gateway.tiers.validation``). The body is never quoted into logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import aiohttp
import httpx
import orjson
from pydantic import ValidationError

from fallback_mf import similar_schemas as mf
from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.tiers.mf import MfFallback
from gateway.tiers.similar_types import UnknownItem
from gateway.tiers.types import TierResult
from gateway.tiers.validation import InvalidAnswer, Rule, from_lists

_ITEM_PATH = re.compile(r"/v1/items/\d+/similar(?:\?[^\s'\")]*)?")


class MfSimilar:
    """Async client of the MF service's similar-items endpoint (shares ``mf``'s pool)."""

    def __init__(self, mf_client: MfFallback) -> None:
        self.client = mf_client.client

    async def similar(
        self,
        item_id: int,
        *,
        k: int,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> TierResult:
        """The k items nearest to ``item_id`` by ALS; raises the Upstream* errors."""
        path = mf.SIMILAR_PATH.format(item_id=item_id)
        try:
            response = await self.client.get(
                path, params={"k": k}, headers=dict(headers or {}), timeout=timeout_s
            )
        except (httpx.TimeoutException, TimeoutError) as exc:
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientError) and not isinstance(
                cause, aiohttp.ServerTimeoutError
            ):
                raise UpstreamUnavailable(f"MF unreachable: {_scrub(cause)}") from exc
            raise UpstreamTimeout(f"MF did not answer in {timeout_s * 1000:.0f} ms") from exc
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            raise UpstreamUnavailable(f"MF unreachable: {_scrub(exc)}") from exc
        if response.status_code >= 500:
            raise UpstreamUnavailable(f"MF answered {response.status_code}")
        if response.status_code == 404 and _code(response.content) == mf.UNKNOWN_ITEM_CODE:
            raise UnknownItem("the item is unknown to the ALS model")
        if response.status_code != 200:
            raise UpstreamError(f"MF answered {response.status_code}")
        if response.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise InvalidAnswer(Rule.FORMAT, "MF answer is not application/json")
        try:
            body = mf.SimilarItemsResponse.model_validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidAnswer(
                Rule.FORMAT, f"MF answer does not match its schema: {where}: {first['msg']}"
            ) from exc
        if body.item_id != item_id:
            raise InvalidAnswer(Rule.FORMAT, "MF answered for another item")
        return from_lists(
            [i.item_id for i in body.items],
            [i.score for i in body.items],
            model_version=f"als/{body.model_version}",
        )


def _code(content: bytes) -> object:
    """The ``code`` of a small JSON error body, None when it is not one."""
    if len(content) > 4096:
        return None
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def _scrub(exc: BaseException | None) -> str:
    """An error's repr for logs without the URL's item id and query."""
    return _ITEM_PATH.sub("/v1/items/{item_id}/similar", repr(exc))
