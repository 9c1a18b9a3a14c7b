"""``POST /v1/recommendations:batch``: up to ``GATEWAY_BATCH_MAX_USERS`` users in one call.

The orchestration is ``gateway.resilience.batch`` (one feature read, one Triton request per model
version, per-user fallbacks); this module is the HTTP side: the limits (422 beyond them; 413 for a
body over ``GATEWAY_BATCH_MAX_BODY_BYTES``, checked by the outermost middleware), the rate limit
(one token per user: the edge took one for the request, the route takes one per further user
once the body says how many, 429 when the bucket lacks them), the queue-time check, metrics per
user as the single-user routes count them, and one served record per user for the CTR join,
each under that user's own request id (``<request id>-<index>``).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Request
from fastapi.responses import Response
from opentelemetry import trace

from cascade.runtime.service_logging import REQUEST_ID
from cascade.runtime.telemetry import client_links
from gateway import schemas
from gateway.components import Components
from gateway.deps import PrincipalDep
from gateway.edge.middleware import route_label
from gateway.edge.queue_time import ARRIVED_KEY
from gateway.errors import BadRequest, error_response
from gateway.eventsink import EventSink
from gateway.metrics import GatewayMetrics
from gateway.resilience.batch import BatchEntry, BatchRecommender
from gateway.routes import ROOT, _errors, shed_if_late
from gateway.settings import GatewaySettings
from gateway.tiers.types import CategoryFilter

tracer = trace.get_tracer("gateway")
router = APIRouter()

_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "model": schemas.BatchRecommendationResponse,
        "description": "one result per user, in the request's order, each with its own tier",
    }
}


def entries_of(
    body: schemas.BatchRecommendationRequest, settings: GatewaySettings
) -> list[BatchEntry]:
    """The validated entries; ``BadRequest`` (422) for a limit the schema cannot state."""
    if len(body.users) > settings.batch_max_users:
        raise BadRequest(
            f"users holds at most {settings.batch_max_users} entries, got {len(body.users)}"
        )
    default_k = settings.default_k if body.k is None else body.k
    entries = []
    for i, user in enumerate(body.users):
        k = default_k if user.k is None else user.k
        if k > settings.max_k:
            raise BadRequest(f"users[{i}].k: must be at most {settings.max_k}, got {k}")
        if len(user.exclude) > settings.max_exclude:
            raise BadRequest(
                f"users[{i}].exclude: holds at most {settings.max_exclude} ids, "
                f"got {len(user.exclude)}"
            )
        categories = CategoryFilter.of(user.include_categories, user.exclude_categories)
        entries.append(BatchEntry(user.user_id, k, user.exclude, categories))
    return entries


@router.post(
    schemas.BATCH_PATH,
    response_model=schemas.BatchRecommendationResponse,
    responses={**_OK, **_errors(400, 401, 403, 413, 422, 429, 431, 500, 503)},
    tags=["recommendations"],
)
async def post_batch(
    request: Request,
    principal: PrincipalDep,
    body: Annotated[schemas.BatchRecommendationRequest, Body()],
) -> Response:
    """Top-k items for each of up to ``batch_max_users`` users, each from the best tier that
    answers for that user within the request's deadline (``served_by`` per user). Costs one
    rate-limit token per user."""
    state = request.app.state
    comps: Components = state.components
    settings: GatewaySettings = state.settings
    metrics: GatewayMetrics = state.metrics
    sink: EventSink = state.events
    entries = entries_of(body, settings)
    request_id: str = request.state.request_id
    REQUEST_ID.set(request_id)
    if len(entries) > 1:
        decision = await state.security.charge(principal, cost=len(entries) - 1)
        if decision is not None and not decision.allowed:
            state.security.metrics.rate_limited.labels(
                client=principal.label_client, key_id=principal.key_id, backend=decision.backend
            ).inc()
            metrics.errors.labels(route=route_label(request.url.path), code="rate_limited").inc()
            return error_response(
                request_id,
                429,
                "rate_limited",
                f"a batch of {len(entries)} users costs {len(entries)} tokens; "
                f"retry after {decision.retry_after_header} s",
                {"Retry-After": decision.retry_after_header},
            )
    late = shed_if_late(request, settings, metrics)
    if late is not None:
        return late
    batch: BatchRecommender | None = getattr(state, "batch", None)
    if batch is None or batch.chain is not comps.chain:
        batch = state.batch = BatchRecommender(comps.chain)
    with tracer.start_as_current_span(
        "gateway.recommend_batch", context=ROOT, links=client_links(request.scope["headers"])
    ) as span:
        arrived: float | None = getattr(request.state, ARRIVED_KEY, None)
        outcomes = await batch.recommend(entries, arrived=arrived)
        if span.is_recording():
            span.set_attributes(
                {
                    "users": len(entries),
                    "request.id": request_id,
                    "client.key_id": principal.key_id,
                    "client.name": principal.client,
                    "breaker.state": comps.breaker.state,
                }
            )
    results = []
    for i, (entry, outcome) in enumerate(zip(entries, outcomes, strict=True)):
        reason = outcome.reason.value if outcome.reason else None
        tier, version = outcome.tier.value, outcome.result.model_version
        if reason:
            metrics.fallbacks.labels(reason=reason, tier=tier).inc()
        metrics.served.labels(tier=tier, model_version=version).inc()
        schemas.check_items(outcome.result.item_ids, outcome.result.scores)  # the last guard
        user_request_id = f"{request_id}-{i}"
        sink.served(
            request_id=user_request_id,
            user_id=entry.user_id,
            tier=tier,
            model_version=version,
            item_ids=outcome.result.item_ids,
        )
        results.append(
            {
                "user_id": entry.user_id,
                "items": [
                    {"item_id": item, "score": score}
                    for item, score in zip(
                        outcome.result.item_ids, outcome.result.scores, strict=True
                    )
                ],
                "served_by": tier,
                "fallback_reason": reason,
                "model_version": version,
                "request_id": user_request_id,
            }
        )
    return Response(
        orjson.dumps({"results": results, "request_id": request_id}),
        media_type="application/json",
    )
