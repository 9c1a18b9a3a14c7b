"""The gateway's app factory: routes, lifespan (clients, breaker, popular refresh), error handler.

``create_app(settings=None)`` builds everything from ``GatewaySettings`` (env ``GATEWAY_*``).
Tests may pass ``components=`` (a factory returning ready ``Components``) to put in-process fakes
in place of upstreams, for faults that real processes cannot produce on demand.
"""

# No `from __future__ import annotations`: the route signatures use `settings.max_k`, a local
# that FastAPI could not resolve from a string annotation.

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from opentelemetry import propagate, trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from cascade.telemetry import configure_tracing
from gateway import gc_watch, schemas
from gateway.components import Components, build_components
from gateway.deps import ComponentsDep, MetricsDep, PrincipalDep, SettingsDep
from gateway.edge.admission import AdaptiveLimit
from gateway.edge.auth import Principal
from gateway.edge.limits import LimitsMiddleware, SecurityMetrics
from gateway.edge.middleware import GatewayMiddleware, route_label
from gateway.edge.queue_time import ARRIVED_KEY, queued_detail
from gateway.edge.security import AuthMiddleware, build_security
from gateway.errors import BadRequest, GatewayError
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("gateway")

ComponentsFactory = Callable[[GatewaySettings, GatewayMetrics], Awaitable[Components]]


_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
}


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Body could not be read as JSON",
        401: "Missing or invalid credentials (one answer whatever the cause)",
        403: "Not allowed from this address",
        413: "Request body too large",
        422: "Invalid request: malformed user id, k out of range, bad body",
        429: "The client's rate limit is exhausted",
        500: "Internal error",
        503: "Overloaded (too many requests in flight, or queued past half the deadline) or not ready",
    }
    headers: dict[int, dict[str, Any]] = {
        401: {
            "WWW-Authenticate": {"description": "the accepted scheme", "schema": {"type": "string"}}
        },
        429: _RETRY_AFTER,
    }
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": schemas.ErrorResponse, "description": text[code]}
        if code in headers:
            out[code]["headers"] = headers[code]
    return out


def _json(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


async def _refresh_popular(
    components: Components, interval_s: float, metrics: GatewayMetrics
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        if await asyncio.to_thread(components.popular.refresh):
            snap = components.popular.snapshot
            metrics.popular_items.set(len(snap.items) if snap else 0)


LOOP_LAG_INTERVAL_S = 0.05


async def _watch_loop_lag(
    metrics: GatewayMetrics, admission: AdaptiveLimit, interval_s: float = LOOP_LAG_INTERVAL_S
) -> None:
    """Sleep ``interval_s`` and record how late the loop woke us: the event-loop lag, which
    also steers the adaptive in-flight limit."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        lag = max(0.0, loop.time() - started - interval_s)
        metrics.loop_lag.observe(lag)
        metrics.in_flight_limit.set(admission.observe_lag(lag))


def create_app(
    settings: GatewaySettings | None = None, *, components: ComponentsFactory | None = None
) -> FastAPI:
    """The gateway app. ``settings`` default to the environment (``GATEWAY_*``)."""
    settings = settings or GatewaySettings()
    metrics = GatewayMetrics()
    security = build_security(settings, SecurityMetrics(metrics.registry))  # refuses unsafe configs
    factory = components or build_components
    admission = AdaptiveLimit(
        ceiling=settings.max_in_flight,
        floor=settings.min_in_flight,
        lag_target_s=settings.loop_lag_target_ms / 1000.0,
    )
    metrics.in_flight_limit.set(admission.limit)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        provider = configure_tracing(service_name="gateway")
        built = await factory(settings, metrics)
        app.state.components = built
        await security.start()
        snap = built.popular.snapshot
        metrics.popular_items.set(len(snap.items) if snap else 0)
        lag_watch = asyncio.create_task(_watch_loop_lag(metrics, admission))
        unwatch_gc = gc_watch.watch(metrics.gc_pause)
        if settings.gc_freeze:
            logger.info("gc: %d startup objects frozen", gc_watch.freeze_startup_objects())
        refresher = None
        if settings.popular_refresh_s > 0:
            refresher = asyncio.create_task(
                _refresh_popular(built, settings.popular_refresh_s, metrics)
            )
        logger.info(
            "gateway ready: popular=%s primary=%s mf=%s",
            built.popular.version,
            settings.triton_url or "-",
            settings.mf_url or "-",
        )
        try:
            yield
        finally:
            for task in (refresher, lag_watch):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            unwatch_gc()
            await built.close()
            await security.close()
            provider.shutdown()
            logger.info("gateway stopped: clients closed")

    app = FastAPI(
        title="Cascade gateway",
        version="1.0",
        summary="Personalized top-k recommendations that always answer in time.",
        lifespan=lifespan,
        # FastAPI's native telemetry adds spans and metrics per request (dependency resolution,
        # serialization: ~0.7 ms of CPU measured by the MF service); ours are one span tree and
        # the middleware's metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.security = security
    # Outermost last: GatewayMiddleware (request id, 413, metrics) > limits (431, 503) > auth (401, 429).
    app.add_middleware(AuthMiddleware, security=security)
    app.add_middleware(
        LimitsMiddleware,
        metrics=security.metrics,
        admission=admission,
        max_header_bytes=settings.max_header_bytes,
        queue_shed_s=settings.queue_shed_fraction * settings.deadline_ms / 1000.0,
    )
    app.add_middleware(
        GatewayMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        request_start_header=settings.request_start_header,
    )

    def error(request: Request, status: int, code: str, detail: str) -> Response:
        metrics.errors.labels(route=route_label(request.url.path), code=code).inc()
        request_id = getattr(request.state, "request_id", None)
        return _json({"code": code, "detail": detail, "request_id": request_id}, status=status)

    @app.exception_handler(GatewayError)
    async def _domain_error(request: Request, exc: GatewayError) -> Response:
        return error(request, exc.status_code, exc.code, exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Routing and body-reading errors (404, 405, undecodable body) in the ErrorResponse shape.
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        response = error(
            request, exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)
        )
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
        return error(request, 422, "invalid_request", "; ".join(parts) or "invalid request")

    queue_shed_s = settings.queue_shed_fraction * settings.deadline_ms / 1000.0

    async def serve(
        request: Request,
        comps: Components,
        principal: Principal,
        *,
        user_id: int,
        k: int,
        exclude: list[int],
    ) -> Response:
        if k > settings.max_k:
            raise BadRequest(f"k must be at most {settings.max_k}, got {k}")
        if len(exclude) > settings.max_exclude:
            raise BadRequest(
                f"exclude holds at most {settings.max_exclude} ids, got {len(exclude)}"
            )
        request_id: str = request.state.request_id
        arrived: float | None = getattr(request.state, ARRIVED_KEY, None)
        if arrived is not None and queue_shed_s:
            queued = time.monotonic() - arrived
            if queued > queue_shed_s:
                # Waited too long before reaching the handler: it would miss its deadline.
                security.metrics.shed.labels(reason="queue_time").inc()
                metrics.errors.labels(route=route_label(request.url.path), code="overloaded").inc()
                return _json(
                    {
                        "code": "overloaded",
                        "detail": queued_detail(queued),
                        "request_id": request_id,
                    },
                    status=503,
                    headers={"Retry-After": "1"},
                )
        context = propagate.extract(request.headers)
        with tracer.start_as_current_span("gateway.recommend", context=context) as span:
            span.set_attribute("k", k)
            span.set_attribute("request.id", request_id)
            span.set_attribute("client.key_id", principal.key_id)  # the key id, never the key
            span.set_attribute("client.name", principal.client)
            outcome = await comps.chain.recommend(
                user_id=user_id, k=k, exclude=exclude, arrived=arrived
            )
            reason = outcome.reason.value if outcome.reason else None
            span.set_attribute("tier", outcome.tier.value)
            span.set_attribute("fallback.reason", reason or "none")
            span.set_attribute("breaker.state", comps.breaker.state)
            span.set_attribute("model.version", outcome.result.model_version)
            span.set_attribute("feature.outcome", outcome.features)
        if reason:
            metrics.fallbacks.labels(reason=reason, tier=outcome.tier.value).inc()
        metrics.served.labels(
            tier=outcome.tier.value, model_version=outcome.result.model_version
        ).inc()
        body = {
            "user_id": user_id,
            "items": [
                {"item_id": i, "score": s}
                for i, s in zip(outcome.result.item_ids, outcome.result.scores, strict=True)
            ],
            "served_by": outcome.tier.value,
            "fallback_reason": reason,
            "model_version": outcome.result.model_version,
            "request_id": request_id,
        }
        # The response model is the last guard (finite scores, ids >= 0): a bug further up
        # becomes the documented 500 JSON body (the middleware's last resort), never a null score.
        schemas.RecommendationResponse.model_validate(body)
        headers = {schemas.SERVED_BY_HEADER: outcome.tier.value}
        if reason:
            headers[schemas.FALLBACK_REASON_HEADER] = reason
        return _json(body, headers=headers)

    ok_doc: dict[int | str, dict[str, Any]] = {
        200: {
            "model": schemas.RecommendationResponse,
            "description": "k items; the serving tier is also in the X-Served-By header",
        }
    }

    @app.get(
        schemas.RECOMMENDATIONS_PATH + "/{user_id}",
        response_model=schemas.RecommendationResponse,
        responses={**ok_doc, **_error_responses(401, 422, 429, 500, 503)},
        tags=["recommendations"],
    )
    async def get_recommendations(
        request: Request,
        comps: ComponentsDep,
        principal: PrincipalDep,
        user_id: Annotated[
            int, Path(ge=0, le=schemas.MAX_USER_ID, description="the data set's user id")
        ],
        k: Annotated[
            int, Query(ge=1, le=settings.max_k, description="how many items")
        ] = settings.default_k,
    ) -> Response:
        """Top-k items for a user, from the best tier that answers within the deadline."""
        return await serve(request, comps, principal, user_id=user_id, k=k, exclude=[])

    @app.post(
        schemas.RECOMMENDATIONS_PATH,
        response_model=schemas.RecommendationResponse,
        responses={**ok_doc, **_error_responses(400, 401, 413, 422, 429, 500, 503)},
        tags=["recommendations"],
    )
    async def post_recommendations(
        request: Request,
        comps: ComponentsDep,
        principal: PrincipalDep,
        body: schemas.RecommendationRequest,
    ) -> Response:
        """Top-k items for a user, never returning the ``exclude`` ids."""
        return await serve(
            request, comps, principal, user_id=body.user_id, k=body.k, exclude=body.exclude
        )

    @app.get("/healthz", response_model=schemas.HealthResponse, tags=["ops"])
    async def healthz() -> Response:
        """The process is alive."""
        return _json({"status": "ok", "checks": {}})

    @app.get(
        "/readyz",
        response_model=schemas.HealthResponse,
        responses=_error_responses(503),
        tags=["ops"],
    )
    async def readyz(comps: ComponentsDep, cfg: SettingsDep) -> Response:
        """Ready when the popular list is loaded and a primary or MF tier is configured.

        Upstream health is reported but never gates readiness: the chain falls back to popular,
        and pulling every replica out of the load balancer during a shared upstream outage
        would turn a degraded answer into no answer.
        """
        checks = {
            "popular": comps.popular.version or "missing",
            "breaker": comps.breaker.state,
            "triton": "unconfigured",
            "mf": "unconfigured",
        }
        if comps.primary is not None:
            checks["triton"] = "ready" if await comps.primary.ready(timeout_s=0.2) else "down"
        if comps.fallback is not None:
            checks["mf"] = "ready" if await comps.fallback.ready(timeout_s=0.2) else "down"
        ready = comps.popular.loaded and (bool(cfg.triton_url) or bool(cfg.mf_url))
        return _json(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status=200 if ready else 503,
        )

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses=_error_responses(401, 403),
    )
    async def prometheus_metrics(m: MetricsDep) -> Response:
        """Prometheus text format: loopback peers only, or with ``GATEWAY_METRICS_TOKEN`` as bearer."""
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        """The spec, with the limits this process enforces (they come from its settings)."""
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            request = spec["components"]["schemas"]["RecommendationRequest"]["properties"]
            request["k"]["maximum"] = settings.max_k
            request["exclude"]["maxItems"] = settings.max_exclude
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
