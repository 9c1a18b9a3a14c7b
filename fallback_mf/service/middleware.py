"""One pure-ASGI middleware for metrics and tracing (cheaper than ``BaseHTTPMiddleware``).

- Metrics: every HTTP request is counted and timed under its route template
  (``/v1/recommendations/{user_id}``, never the raw path, so label cardinality stays bounded).
- Tracing: one SERVER span per request, continuing an incoming W3C ``traceparent``; probes and
  ``/metrics`` are not traced (they would drown the traces). Continuing it is deliberate (issue
  20, item 10): this service is not an edge; its caller is the gateway (NetworkPolicy, loopback
  locally), whose ``traceparent`` carries the gateway's own sampling decision, since the gateway
  starts a new root for every client request (``cascade.runtime.telemetry.client_links``).
  Starting a root here too would split every request in two traces, sampled independently.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fallback_mf.service.metrics import ServiceMetrics

UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
UNMATCHED_ROUTE = "unmatched"


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class ObservabilityMiddleware:
    """Time, count and trace every HTTP request handled by ``app``."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, tracer: trace.Tracer) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app raises before starting a response
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            if scope["path"] in UNTRACED_PATHS:
                await self.app(scope, receive, send_wrapper)
            else:
                await self._traced(scope, receive, send_wrapper, lambda: status)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe(
                route=_route(scope),
                method=scope["method"],
                status=status,
                seconds=time.perf_counter() - started,
            )

    async def _traced(self, scope: Scope, receive: Receive, send: Send, status: Any) -> None:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(carrier)
        with self.tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}",
            context=parent,
            kind=SpanKind.SERVER,
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            await self.app(scope, receive, send)
            route = _route(scope)
            code = int(status())
            span.update_name(f"{scope['method']} {route}")
            span.set_attribute("http.request.method", scope["method"])
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", code)
            if code >= 500:
                span.set_status(Status(StatusCode.ERROR))
