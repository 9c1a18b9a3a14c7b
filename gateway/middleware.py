"""One pure ASGI middleware: request ids, the body-size limit, request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) to keep the per-request overhead in microseconds.

- ``scope["state"]["arrived"]``: ``time.monotonic()`` when the request reached the app (the
  request's deadline and queue-time shedding count from it).
- ``X-Request-ID``: echoed when the client sent a sane one (<= 64 chars of ``[A-Za-z0-9._-]``),
  else a new uuid4 hex; stored in ``scope["state"]["request_id"]``.
- Bodies above ``max_body_bytes`` answer 413 before the app sees them (Content-Length checked
  first; chunked bodies are counted while read).
- ``gateway_requests_total``, ``gateway_request_seconds``, ``gateway_in_flight``, labelled by
  route (a fixed set, so clients cannot blow up label cardinality) and the ``X-Served-By`` tier.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import GatewayMetrics
from gateway.queue_time import ARRIVED_KEY, upstream_wait
from gateway.schemas import RECOMMENDATIONS_PATH, REQUEST_ID_HEADER, SERVED_BY_HEADER

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ROUTES = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")


def route_label(path: str) -> str:
    if path.startswith(RECOMMENDATIONS_PATH + "/"):
        return RECOMMENDATIONS_PATH + "/{user_id}"
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
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.request_start = request_start_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        # Arrival on the chain's clock: the deadline and queue-time shedding count from here,
        # or from the ingress's stamp, so the wait in the socket before uvicorn counts too.
        arrived = time.monotonic()
        if self.request_start:
            waited = upstream_wait(headers.get(self.request_start), time.time())
            if waited is not None:
                self.metrics.upstream_queue_seconds.observe(waited)
                arrived -= waited
        scope.setdefault("state", {})[ARRIVED_KEY] = arrived
        sent_id = headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = sent_id if _SAFE_ID.match(sent_id) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        route = route_label(scope["path"])
        status = 500
        tier = "none"
        self.metrics.in_flight.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, tier
            if message["type"] == "http.response.start":
                status = message["status"]
                raw: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                for key, value in raw:
                    if key.lower() == SERVED_BY_HEADER.lower().encode():
                        tier = value.decode("latin-1")
                raw.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message["headers"] = raw
            await send(message)

        try:
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await self._too_large(send_wrapper, request_id)
                return
            try:
                await self.app(scope, self._limited(receive), send_wrapper)
            except _TooLarge:
                await self._too_large(send_wrapper, request_id)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            method = scope["method"]
            self.metrics.requests.labels(
                route=route, method=method, status=str(status), tier=tier
            ).inc()
            self.metrics.request_seconds.labels(route=route, tier=tier).observe(elapsed)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise _TooLarge
            return message

        return wrapped

    async def _too_large(self, send: Send, request_id: str) -> None:
        self.metrics.errors.labels(route="any", code="payload_too_large").inc()
        body: dict[str, Any] = {
            "code": "payload_too_large",
            "detail": f"request body exceeds {self.max_body_bytes} bytes",
            "request_id": request_id,
        }
        payload = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
