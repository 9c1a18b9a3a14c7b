"""Input and load limits in front of the app: header size (431) and in-flight requests (503).

Pure ASGI, like ``GatewayMiddleware``, and installed inside it (so its request id and request
metrics cover these answers too). The body-size limit (413) lives in ``GatewayMiddleware``; the
maximum k (422) is validated by the routes.

- Headers: uvicorn's default HTTP parser (httptools) accepts request headers of any size
  (measured: a 2 MB header is served), so the app refuses more than ``max_header_bytes`` in
  total or ``max_headers`` fields with 431. The bytes were already read by then: the memory
  bound against a header flood belongs to the ingress (nginx ``large_client_header_buffers``).
- Load shedding: with ``admission.limit`` requests already being served in this process (an
  adaptive limit up to ``max_in_flight``, see ``gateway.edge.admission``), a new
  one answers 503 with ``Retry-After`` at once instead of waiting in an unbounded queue (a
  queued request would miss its deadline anyway). A plain counter: one event loop per process.
  Health probes and ``/metrics`` are never shed. A
  request admitted but queued past ``queue_shed_fraction`` of its deadline before its handler
  runs is shed there (``gateway.main``, ``gateway_shed_total{reason="queue_time"}``); one that
  had already waited that long when it got here (the ingress's ``X-Request-Start``, see
  ``gateway.edge.queue_time``) is shed here, before auth and routing, with the same reason.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.edge.admission import AdaptiveLimit
from gateway.edge.queue_time import queue_shed_detail
from gateway.errors import refuse

NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})


class SecurityMetrics:
    """The security layer's metrics (prefix ``gateway_``), on the gateway's registry.

    Labels carry the key id and the client name from the key file, never a key, and never a
    value a client chose (an unknown key id is not a label): the label sets stay bounded.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.client_requests = Counter(
            "gateway_client_requests",
            "Authenticated requests by client, key id and status",
            ["client", "key_id", "status"],
            registry=r,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures",
            "Requests refused with 401, by internal reason",
            ["reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited",
            "Requests refused with 429",
            ["client", "key_id", "backend"],
            registry=r,
        )
        self.ratelimit_decisions = Counter(
            "gateway_ratelimit_decisions",
            "Rate-limit decisions by backend",
            ["backend"],
            registry=r,
        )
        self.ratelimit_redis_errors = Counter(
            "gateway_ratelimit_redis_errors",
            "Rate-limiter Redis failures (fell back to local)",
            registry=r,
        )
        self.shed = Counter(
            "gateway_shed",
            "Requests refused before the app: in_flight (503), headers (431)",
            ["reason"],
            registry=r,
        )
        self.api_keys = Gauge("gateway_api_keys", "Keys in the key file", ["state"], registry=r)
        self.api_keys_reload_failures = Counter(
            "gateway_api_keys_reload_failures",
            "Key file reloads that failed (the previous keys, revoked ones included, stay in force)",
            registry=r,
        )
        self.api_keys_reload_failing = Gauge(
            "gateway_api_keys_reload_failing",
            "1 while the key file on disk could not be loaded (an older key set is in force)",
            registry=r,
        )


class LimitsMiddleware:
    """431 for oversized headers, 503 + ``Retry-After`` beyond the admission limit (0: none)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: SecurityMetrics,
        admission: AdaptiveLimit,
        max_header_bytes: int,
        max_headers: int = 100,
        retry_after_s: int = 1,
        queue_shed_s: float = 0.0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.admission = admission
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.retry_after = str(retry_after_s)
        self.queue_shed_s = queue_shed_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[Any] = scope["headers"]
        size = sum(len(k) + len(v) + 4 for k, v in headers)  # "name: value\r\n"
        if size > self.max_header_bytes or len(headers) > self.max_headers:
            self.metrics.shed.labels(reason="headers").inc()
            await refuse(
                send,
                scope,
                status=431,
                code="headers_too_large",
                detail=f"request headers exceed {self.max_header_bytes} bytes or {self.max_headers} fields",
            )
            return
        shed = self._shed_reason(scope)
        if shed is not None:
            reason, detail = shed
            self.metrics.shed.labels(reason=reason).inc()
            await refuse(
                send,
                scope,
                status=503,
                code="overloaded",
                detail=detail,
                headers={"Retry-After": self.retry_after},
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _shed_reason(self, scope: Scope) -> tuple[str, str] | None:
        """``(metric reason, detail)`` when this request is refused now: it already waited past
        the queue-time threshold, or the adaptive in-flight limit is reached. Probes never."""
        if scope["path"] in NEVER_SHED:
            return None
        late = queue_shed_detail(scope.get("state", {}), self.queue_shed_s)
        if late is not None:
            return "queue_time", late
        limit = self.admission.limit
        if limit and self.in_flight >= limit:
            return "in_flight", "too many requests in flight; retry shortly"
        return None
