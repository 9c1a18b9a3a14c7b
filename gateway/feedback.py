"""``POST /v1/events``: user feedback into the durable event log (issue 17).

A batch of 1..``MAX_BATCH`` events (``events.contract.Event``) is validated whole: one bad event
refuses the batch with one 422 listing every bad event by index, and nothing is published. A good
batch is published to NATS JetStream and answered ``202`` only once *every* event is acked by the
log (stored; on a quorum of replicas in a cluster). When the log cannot take it (not connected,
an ack missing after ``GATEWAY_EVENTS_PUBLISH_TIMEOUT_MS``, a stream error) the answer is ``503``
``event_log_unavailable`` with ``Retry-After``: never a 202 for an event that may be lost. Some
events of a failed batch may be stored already; a client retry with the same ``event_id`` values
is deduplicated (the stream's duplicate window, then the consumer's ``event_id`` window).

Limits: the same credentials as the recommendations; a batch costs **one token** of the client's
rate-limit bucket (the edge decides before reading the body, so a throttled client costs no
body read or JSON parse; a batch's work is bounded by ``MAX_BATCH`` and the body limit,
``GATEWAY_EVENTS_MAX_BODY_BYTES``, 256 KiB). Trace: span ``gateway.events`` (a new root, like
``gateway.recommend``); its context travels to the consumer in each message's headers.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from opentelemetry import trace
from opentelemetry.context import Context

from cascade.runtime.redact import redact
from cascade.runtime.telemetry import client_links
from events.contract import (
    EVENT_ID_PATTERN,
    EVENT_TYPES,
    MAX_BATCH,
    REQUEST_ID_PATTERN,
    BatchError,
    validate_batch,
)
from events.log import LogUnavailable, trace_headers
from gateway import schemas
from gateway.deps import PrincipalDep
from gateway.errors import error_body
from gateway.eventsink import EventSink
from gateway.metrics import EventOutcome, GatewayMetrics
from gateway.settings import GatewaySettings

tracer = trace.get_tracer("gateway")
ROOT = Context()
router = APIRouter()
RETRY_AFTER_S = "1"
MAX_ID = schemas.MAX_JSON_ID


def _event_schema() -> dict[str, Any]:
    """The request body's JSON Schema, from the contract's constants (the rules' one place).
    A rating carries ``value``; the other types may not (``oneOf`` on ``type``). The one rule a
    schema cannot state: a timestamp more than ``GATEWAY_EVENTS_MAX_FUTURE_S`` ahead is refused."""
    common: dict[str, Any] = {
        "event_id": {"type": "string", "pattern": f"^{EVENT_ID_PATTERN}$"},
        "user_id": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        "item_id": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        "timestamp": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "when it happened, epoch seconds (UTC); at most a few minutes ahead",
        },
        "request_id": {
            "anyOf": [{"type": "string", "pattern": f"^{REQUEST_ID_PATTERN}$"}, {"type": "null"}],
            "description": "the recommendation that showed the item (its request_id)",
        },
    }
    others = [t for t in EVENT_TYPES if t != "rating"]
    required = ["event_id", "user_id", "item_id", "type", "timestamp"]
    return {
        "oneOf": [
            {
                "title": "Event",
                "type": "object",
                "additionalProperties": False,
                "required": required,
                "properties": {
                    **common,
                    "type": {"type": "string", "enum": others},
                    "value": {"type": "null"},
                },
            },
            {
                "title": "Rating",
                "type": "object",
                "additionalProperties": False,
                "required": [*required, "value"],
                "properties": {
                    **common,
                    "type": {"type": "string", "enum": ["rating"]},
                    "value": {"type": "number", "description": "the rating"},
                },
            },
        ]
    }


REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "title": "EventBatch",
                "type": "object",
                "additionalProperties": False,
                "required": ["events"],
                "properties": {
                    "events": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_BATCH,
                        "items": _event_schema(),
                    }
                },
            },
            "example": {
                "events": [
                    {
                        "event_id": "a1b2-0",
                        "user_id": 42,
                        "item_id": 7,
                        "type": "click",
                        "timestamp": 1796400000.0,
                        "request_id": "5f2c0a9e",
                    }
                ]
            },
        }
    },
}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": schemas.EventsAccepted, "description": "every event is stored in the log"},
    401: {
        "model": schemas.ErrorResponse,
        "description": "Missing or invalid credentials (one answer whatever the cause)",
        "headers": {
            "WWW-Authenticate": {"description": "the accepted scheme", "schema": {"type": "string"}}
        },
    },
    413: {"model": schemas.ErrorResponse, "description": "Request body too large"},
    422: {
        "model": schemas.EventsRejected,
        "description": "Nothing stored: the body is not a batch of 1..500 events, or some events "
        "are invalid (listed by index)",
    },
    429: {
        "model": schemas.ErrorResponse,
        "description": "The client's rate limit is exhausted (a batch costs one request)",
        "headers": _RETRY_AFTER,
    },
    431: {"model": schemas.ErrorResponse, "description": "Request headers too large"},
    500: {"model": schemas.ErrorResponse, "description": "Internal error"},
    503: {
        "model": schemas.ErrorResponse,
        "description": "Nothing acknowledged: the event log cannot take the batch now "
        "(`event_log_unavailable`, retry with the same event ids), the events API is off "
        "(`events_disabled`), or the gateway is overloaded (`overloaded`)",
        "headers": _RETRY_AFTER,
    },
}


def _answer(
    status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None
) -> Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _rejected(
    metrics: GatewayMetrics, request_id: str, n: int, detail: str, errors: list[dict[str, Any]]
) -> Response:
    metrics.events.labels(outcome=EventOutcome.INVALID.value).inc(n)
    metrics.event_batches.labels(outcome=EventOutcome.INVALID.value).inc()
    metrics.errors.labels(route=schemas.EVENTS_PATH, code="invalid_request").inc()
    payload = {"code": "invalid_request", "detail": detail, "request_id": request_id}
    return _answer(422, {**payload, "errors": errors})


@router.post(
    schemas.EVENTS_PATH,
    status_code=202,
    response_model=schemas.EventsAccepted,
    responses=RESPONSES,
    openapi_extra={"requestBody": REQUEST_BODY},
    tags=["events"],
)
async def post_events(request: Request, principal: PrincipalDep) -> Response:
    """Store a batch of user events (impressions, clicks, views, purchases, ratings) in the
    event log; 202 only once every event is stored, 503 when the log cannot take them."""
    state = request.app.state
    settings: GatewaySettings = state.settings
    metrics: GatewayMetrics = state.metrics
    sink: EventSink = state.events
    request_id: str = request.state.request_id
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _rejected(metrics, request_id, 1, "the body is not valid JSON", [])
    if not isinstance(payload, dict) or set(payload) != {"events"}:
        detail = 'expected a JSON object {"events": [...]} and nothing else'
        return _rejected(metrics, request_id, 1, detail, [])
    raw = payload["events"]
    try:
        events, errors = validate_batch(
            raw, now=time.time(), max_future_s=settings.events_max_future_s
        )
    except BatchError as exc:
        return _rejected(metrics, request_id, max(1, len(raw) if isinstance(raw, list) else 1),
                         exc.reason, [])  # fmt: skip
    if errors:
        detail = f"{len(errors)} of {len(raw)} events are invalid; nothing was stored"
        return _rejected(metrics, request_id, len(raw), detail, errors)
    n = len(events)
    if not sink.enabled:
        return _unavailable(
            metrics, request_id, n, EventOutcome.DISABLED, "events_disabled",
            "the events API is not configured on this gateway (GATEWAY_EVENTS_NATS_URL)",
        )  # fmt: skip
    log = sink.log
    assert log is not None
    with tracer.start_as_current_span(
        "gateway.events", context=ROOT, links=client_links(request.scope["headers"])
    ) as span:
        if span.is_recording():
            span.set_attributes(
                {"events.count": n, "request.id": request_id, "client.key_id": principal.key_id}
            )
        started = time.perf_counter()
        try:
            # The span's context rides in every message's headers, to the consumer's write.
            await log.publish_batch(
                events, headers=trace_headers(), timeout_s=sink.publish_timeout_s
            )
        except LogUnavailable as exc:
            span.set_attribute("events.outcome", EventOutcome.UNAVAILABLE.value)
            return _unavailable(
                metrics, request_id, n, EventOutcome.UNAVAILABLE, "event_log_unavailable",
                f"the event log did not store the batch ({redact(exc.reason)}); nothing is "
                "acknowledged: retry with the same event ids",
            )  # fmt: skip
        finally:
            metrics.events_publish_seconds.observe(time.perf_counter() - started)
    metrics.events.labels(outcome=EventOutcome.ACCEPTED.value).inc(n)
    metrics.event_batches.labels(outcome=EventOutcome.ACCEPTED.value).inc()
    return _answer(202, {"accepted": n, "request_id": request_id})


def _unavailable(
    metrics: GatewayMetrics,
    request_id: str,
    n: int,
    outcome: EventOutcome,
    code: str,
    detail: str,
) -> Response:
    metrics.events.labels(outcome=outcome.value).inc(n)
    metrics.event_batches.labels(outcome=outcome.value).inc()
    metrics.errors.labels(route=schemas.EVENTS_PATH, code=code).inc()
    return _answer(503, error_body(code, detail, request_id), {"Retry-After": RETRY_AFTER_S})
