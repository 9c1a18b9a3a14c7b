"""``GET /v1/items/{item_id}/similar?k=20``: the items most similar to one item.

Answers :class:`SimilarItemsResponse` (``X-Served-By`` repeats the tier, ``X-Fallback-Reason`` the
reason when there is one), from the chain in ``gateway.similar``. The same front door as the
recommendations: authentication, rate limit, admission and queue-time shedding, request ids, the
``ErrorResponse`` body for every error, the request metrics (route label
``/v1/items/{item_id}/similar``). 404 ``unknown_item`` for an item the catalogue does not know; 422
for a malformed item id or k outside ``[1, min(GATEWAY_MAX_K, similar_contract.MAX_K)]``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from opentelemetry import trace
from opentelemetry.context import Context
from pydantic import BaseModel, Field

from cascade.runtime.service_logging import REQUEST_ID
from cascade.runtime.telemetry import client_links
from gateway import schemas
from gateway.components import Components
from gateway.deps import PrincipalDep
from gateway.edge.middleware import SIMILAR_ROUTE, route_label
from gateway.edge.queue_time import ARRIVED_KEY, PENDING_KEY, apply_pending_stamp, queue_shed_detail
from gateway.errors import BadRequest, error_response
from gateway.metrics import GatewayMetrics
from gateway.routes import _errors, _json, reject_unknown_query
from gateway.settings import GatewaySettings
from gateway.similar import SimilarChain
from two_tower import similar_contract

SIMILAR_PATH = SIMILAR_ROUTE  # the request metrics' route label is the path template
SIMILAR_QUERY = frozenset({"k"})  # what the route takes; anything else is a 422

tracer = trace.get_tracer("gateway")
ROOT = Context()  # no parent: every request's trace starts here
router = APIRouter()


class SimilarItemsResponse(BaseModel):
    """Up to k unique items, never ``item_id`` itself, most similar first (fewer than k only when
    the catalogue has fewer other items). Scores are comparable only within one answer's tier:
    ``two_tower`` and ``als`` a cosine similarity in [-1, 1], ``popular`` the item's number of
    training interactions."""

    item_id: int
    items: list[schemas.ScoredItem]
    served_by: schemas.Tier
    fallback_reason: schemas.FallbackReason | None = Field(
        description="null when the primary (two_tower) served the request"
    )
    model_version: str
    request_id: str


def max_k(settings: GatewaySettings) -> int:
    return min(settings.max_k, similar_contract.MAX_K)


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": SimilarItemsResponse,
        "description": "the most similar items; the serving tier is also in the X-Served-By header",
    },
    404: {
        "model": schemas.ErrorResponse,
        "description": "unknown_item: the catalogue does not know the item",
    },
    **_errors(401, 422, 429, 431, 500, 503),
}


@router.get(
    SIMILAR_PATH,
    response_model=SimilarItemsResponse,
    responses=_RESPONSES,
    tags=["recommendations"],
)
async def get_similar_items(
    request: Request,
    principal: PrincipalDep,
    item_id: Annotated[
        int,
        Path(ge=0, le=schemas.MAX_USER_ID, description="the data set's item id", examples=[42]),
    ],
    k: Annotated[int | None, Query(ge=1, description="how many items")] = None,
) -> Response:
    """The items most similar to ``item_id`` (Two-Tower item embeddings, else ALS item factors,
    else popular items), from the best tier that answers within the deadline."""
    reject_unknown_query(request, SIMILAR_QUERY)
    app_state = request.app.state
    settings: GatewaySettings = app_state.settings
    metrics: GatewayMetrics = app_state.metrics
    comps: Components = app_state.components
    chain: SimilarChain | None = comps.similar
    k = min(settings.default_k, max_k(settings)) if k is None else k
    if k > max_k(settings):
        raise BadRequest(f"k must be at most {max_k(settings)}, got {k}")
    request_id: str = request.state.request_id
    REQUEST_ID.set(request_id)
    state = request.scope["state"]
    if PENDING_KEY in state:  # X-Request-Start from a peer that is not our ingress: now believed
        waited = apply_pending_stamp(state, time.time())
        if waited is not None:
            metrics.upstream_queue_seconds.observe(waited)
    late = queue_shed_detail(state, settings.queue_shed_s)
    if late is not None:  # queued too long before reaching the handler: it would miss its deadline
        app_state.security.metrics.shed.labels(reason="queue_time").inc()
        metrics.errors.labels(route=route_label(request.url.path), code="overloaded").inc()
        return error_response(request_id, 503, "overloaded", late, {"Retry-After": "1"})
    if chain is None:  # the lifespan always sets one; a guard, not a path
        return error_response(request_id, 503, "not_ready", "similar items are not configured")
    arrived: float | None = getattr(request.state, ARRIVED_KEY, None)
    with tracer.start_as_current_span(
        "gateway.similar", context=ROOT, links=client_links(request.scope["headers"])
    ) as span:
        outcome = await chain.similar(item_id=item_id, k=k, arrived=arrived)
        reason = outcome.reason.value if outcome.reason else None
        if span.is_recording():
            span.set_attributes(
                {
                    "k": k,
                    "request.id": request_id,
                    "client.key_id": principal.key_id,
                    "client.name": principal.client,
                    "tier": outcome.tier.value,
                    "fallback.reason": reason or "none",
                    "breaker.state": chain.breaker.state,
                    "model.version": outcome.result.model_version,
                }
            )
    result = outcome.result
    schemas.check_items(result.item_ids, result.scores)  # the last guard: never a null score
    body = {
        "item_id": item_id,
        "items": [
            {"item_id": i, "score": s} for i, s in zip(result.item_ids, result.scores, strict=True)
        ],
        "served_by": outcome.tier.value,
        "fallback_reason": reason,
        "model_version": result.model_version,
        "request_id": request_id,
    }
    headers = {schemas.SERVED_BY_HEADER: outcome.tier.value}
    if reason:
        headers[schemas.FALLBACK_REASON_HEADER] = reason
    return _json(body, headers=headers)


def document_limits(spec: dict[str, Any], settings: GatewaySettings) -> dict[str, Any]:
    """Write this process's k limits into the route's spec (idempotent)."""
    operation = spec.get("paths", {}).get(SIMILAR_PATH, {}).get("get")
    if operation:
        for param in operation["parameters"]:
            if param["name"] == "k":
                param["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": max_k(settings),
                    "default": min(settings.default_k, max_k(settings)),
                }
    return spec
