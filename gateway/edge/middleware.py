"""One pure ASGI middleware: request ids, the body-size limit, request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) to keep the per-request overhead in microseconds.

- ``scope["state"]["arrived"]``: ``time.monotonic()`` when the request reached the app (the
  request's deadline and queue-time shedding count from it).
- ``X-Request-ID``: echoed when the client sent a sane one (<= 64 chars of ``[A-Za-z0-9._-]``),
  else a new id of 32 hex digits (a random per-process prefix and a counter: unique like a
  uuid4, without a urandom system call per request); stored in ``scope["state"]["request_id"]``.
- The last resort: an exception that escapes the app before the response started answers
  500 ``internal`` in the ``ErrorResponse`` shape with the request id (logged with its
  traceback, at most once per 10 s per exception type), never Starlette's ``text/plain``.
- Bodies above ``max_body_bytes`` answer 413 before the app sees them (Content-Length checked
  first; chunked bodies are counted while read). ``path_body_bytes`` sets another limit for an
  exact path (``POST /v1/events`` takes batches of up to 500 events).
- ``gateway_requests_total``, ``gateway_request_seconds``, ``gateway_in_flight``, labelled by
  route (a fixed set, so clients cannot blow up label cardinality) and the ``X-Served-By`` tier.
  A request the edge refused (``gateway.errors.refuse``: 401, 403, 413, 429, 431, 503 shed
  before the route) is labelled ``route="refused"``: the SLO and scaling rules select the
  recommendation routes, so refusals never reach them.
- ``X-Request-Start`` (``gateway.edge.queue_time``): applied here only for a peer in
  ``GATEWAY_TRUSTED_PROXIES``; from anyone else it waits for authentication (the route handler).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.edge.queue_time import ARRIVED_KEY, PENDING_KEY, trusted_peers, upstream_wait
from gateway.errors import REFUSED_KEY, REFUSED_ROUTE, refuse, send_error
from gateway.metrics import GatewayMetrics
from gateway.schemas import (
    BATCH_PATH,
    EVENTS_PATH,
    RECOMMENDATIONS_PATH,
    REQUEST_ID_HEADER,
    SERVED_BY_HEADER,
)
from gateway.throttled_log import ThrottledLog

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ROUTES = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", EVENTS_PATH, BATCH_PATH)
# GET /v1/items/{item_id}/similar (gateway.similar_routes, which imports this module)
SIMILAR_ROUTE = "/v1/items/{item_id}/similar"
_ITEMS_PREFIX, _SIMILAR_SUFFIX = "/v1/items/", "/similar"


def route_label(path: str) -> str:
    if path.startswith(RECOMMENDATIONS_PATH + "/"):
        return RECOMMENDATIONS_PATH + "/{user_id}"
    if path.startswith(_ITEMS_PREFIX) and path.endswith(_SIMILAR_SUFFIX):
        return SIMILAR_ROUTE
    if path == RECOMMENDATIONS_PATH or path in _ROUTES:
        return path
    return "other"


class _TooLarge(Exception):
    pass


class GatewayMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: GatewayMetrics,
        max_body_bytes: int,
        request_start_header: str = "",
        trusted_proxies: str = "",
        path_body_bytes: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.path_body_bytes = dict(path_body_bytes or {})
        self.request_start = request_start_header.lower().encode("latin-1")
        self.trusted = trusted_peers(trusted_proxies)
        self._log = ThrottledLog(logger)
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        # Arrival on the chain's clock: the deadline and queue-time shedding count from here,
        # or from the ingress's stamp, so the wait in the socket before uvicorn counts too.
        arrived = time.monotonic()
        state = scope.setdefault("state", {})
        stamp = headers.get(self.request_start) if self.request_start else None
        if stamp:
            client = scope.get("client")
            if self.trusted is not None and client is not None and self.trusted(client[0]):
                waited = upstream_wait(stamp, time.time())
                if waited is not None:
                    self.metrics.upstream_queue_seconds.observe(waited)
                    arrived -= waited
            else:  # not from our ingress: believed only once the request is authenticated
                state[PENDING_KEY] = stamp
        state[ARRIVED_KEY] = arrived
        sent_id = headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = (
            sent_id
            if _SAFE_ID.fullmatch(sent_id)
            else f"{self._id_prefix}{next(self._id_counter):016x}"
        )
        state["request_id"] = request_id
        route = route_label(scope["path"])
        status = 500
        tier = "none"
        started_response = False
        self.metrics.in_flight.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, tier
            if message["type"] == "http.response.start":
                nonlocal started_response
                started_response = True
                status = message["status"]
                raw: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                for key, value in raw:
                    if key.lower() == SERVED_BY_HEADER.lower().encode():
                        tier = value.decode("latin-1")
                raw.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message["headers"] = raw
            await send(message)

        limit = self.path_body_bytes.get(scope["path"], self.max_body_bytes)
        try:
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                await self._too_large(send_wrapper, scope, limit)
                return
            try:
                await self.app(scope, self._limited(receive, limit), send_wrapper)
            except _TooLarge:
                await self._too_large(send_wrapper, scope, limit)
            except Exception as exc:  # the last resort: nothing escapes as text/plain
                if started_response:
                    raise  # the status line is out: nothing left to fix, let the server close it
                name = type(exc).__name__
                self.metrics.errors.labels(route=route, code="internal").inc()
                self._log.error(name, "unhandled %s on %s", name, route, exc_info=True)
                detail = "internal error; quote the request id when reporting it"
                await send_error(send_wrapper, scope, status=500, code="internal", detail=detail)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            method = scope["method"]
            if state.get(REFUSED_KEY):
                route = REFUSED_ROUTE
            self.metrics.requests.labels(
                route=route, method=method, status=str(status), tier=tier
            ).inc()
            self.metrics.request_seconds.labels(route=route, tier=tier).observe(elapsed)

    def _limited(self, receive: Receive, limit: int) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        return wrapped

    async def _too_large(self, send: Send, scope: Scope, limit: int) -> None:
        self.metrics.errors.labels(route="any", code="payload_too_large").inc()
        detail = f"request body exceeds {limit} bytes"
        await refuse(send, scope, status=413, code="payload_too_large", detail=detail)
