"""The ALS tier: the fallback MF service over HTTP (httpx on an aiohttp transport, keep-alive
pool, timeout per call).

Wire format: ``fallback_mf.schemas``. httpx errors become ``UpstreamTimeout`` /
``UpstreamUnavailable`` / ``UpstreamError``; a user the model never saw (``known_user`` false)
becomes ``UnknownUser``, so the chain answers ``cold_start`` from its own popular list. A body
that is not that schema's JSON for the user asked about (non-finite scores, ids outside int64
included) becomes ``InvalidAnswer`` (``gateway.tiers.validation``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from pydantic import ValidationError

from fallback_mf import schemas as mf
from gateway.errors import UnknownUser, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.tiers.types import NO_FILTER, CategoryFilter, TierResult
from gateway.tiers.validation import InvalidAnswer, Rule, from_lists

MF_MAX_EXCLUDE = 1000  # the MF service's default MF_MAX_EXCLUDE
# Idle connections are dropped before uvicorn's 5 s keep-alive closes them under a request.
KEEPALIVE_S = 2.0


class MfFallback:
    """Async client of ``GET /v1/recommendations/{user_id}`` on the MF service."""

    def __init__(self, *, base_url: str, timeout_s: float, max_connections: int = 64) -> None:
        self.base_url = base_url.rstrip("/")
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_S,
        )
        # httpx's API on aiohttp's wire: httpx's own transport (httpcore + anyio) cost ~650 us of
        # CPU per call here, aiohttp ~70 us; at a 300 req/s spike that fell back to ALS, the
        # gateway's loop saturated on it (D7: ALS calls p99 0.8 s while MF answered in 3 ms).
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s),
            transport=AiohttpTransport(limits=limits),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def ready(self, *, timeout_s: float = 0.5) -> bool:
        """Whether ``/readyz`` answers 200 (for /readyz details; never gates readiness)."""
        try:
            response = await self.client.get("/readyz", timeout=timeout_s)
        except (httpx.HTTPError, aiohttp.ClientError, TimeoutError):
            return False
        return response.status_code == 200

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
        """Top-k for one user, excluding ``exclude``, inside ``categories`` (the service
        filters before its top-k; an artifact without item categories answers 409, an
        ``UpstreamError``); raises the Upstream* errors."""
        params: dict[str, str | int | list[str]] = {"k": k}
        if exclude:
            params["exclude"] = ",".join(str(i) for i in list(exclude)[:MF_MAX_EXCLUDE])
        if categories.include:
            params["include_categories"] = list(categories.include)
        if categories.exclude:
            params["exclude_categories"] = list(categories.exclude)
        path = mf.RECOMMENDATIONS_PATH.format(user_id=user_id)
        try:
            response = await self.client.get(
                path, params=params, headers=dict(headers or {}), timeout=timeout_s
            )
        except (httpx.TimeoutException, TimeoutError) as exc:
            if _refused_or_dropped(exc):
                raise UpstreamUnavailable(f"MF unreachable: {_scrub(exc.__cause__)}") from exc
            raise UpstreamTimeout(f"MF did not answer in {timeout_s * 1000:.0f} ms") from exc
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            # The transport maps aiohttp's errors to httpx's; an unmapped one is still the wire.
            raise UpstreamUnavailable(f"MF unreachable: {_scrub(exc)}") from exc
        if response.status_code >= 500:
            raise UpstreamUnavailable(f"MF answered {response.status_code}")
        if response.status_code != 200:
            # not the body: it may quote the request (user id, exclusions) into our logs
            raise UpstreamError(f"MF answered {response.status_code}")
        if response.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise InvalidAnswer(Rule.FORMAT, "MF answer is not application/json")
        try:
            body = mf.RecommendationResponse.model_validate_json(response.content)
        except ValidationError as exc:
            raise InvalidAnswer(
                Rule.FORMAT, f"MF answer does not match its schema: {_first_error(exc)}"
            ) from exc
        if body.user_id != user_id:
            raise InvalidAnswer(Rule.FORMAT, "MF answered for another user")
        if not body.known_user:
            raise UnknownUser("the user is unknown to the ALS model")
        return from_lists(
            [i.item_id for i in body.items],
            [i.score for i in body.items],
            model_version=f"als/{body.model_version}",
        )


_USER_PATH = re.compile(r"/v1/recommendations/\d+(?:\?[^\s'\")]*)?")


def _scrub(exc: BaseException | None) -> str:
    """An error's repr for logs without the user id and exclusions of the URL it may quote
    (issue 20: no personal data in logs; the request id identifies the request)."""
    return _USER_PATH.sub("/v1/recommendations/{user_id}", repr(exc))


def _first_error(exc: ValidationError) -> str:
    """Where and what, without echoing the (untrusted, maybe huge) input."""
    first = exc.errors(include_input=False, include_url=False)[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


def _refused_or_dropped(exc: Exception) -> bool:
    """The transport maps every aiohttp connection error to ``ConnectTimeout``: tell them apart."""
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientError) and not isinstance(
        cause, aiohttp.ServerTimeoutError
    )
