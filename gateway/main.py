"""The gateway's app factory and lifespan.

``create_app(settings=None)`` builds everything from ``GatewaySettings`` (env ``GATEWAY_*``).
Tests may pass ``components=`` (a factory returning ready ``Components``) to put in-process fakes
in place of upstreams, for faults that real processes cannot produce on demand. The routes are in
``gateway.routes``, the error rendering in ``gateway.handlers``, the edge layers in
``gateway.edge``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cascade.runtime.api_docs import serve_docs_offline
from cascade.runtime.redact import redact_url
from cascade.runtime.tasks import stop_tasks
from cascade.runtime.telemetry import configure_tracing
from gateway import background, eventsink, gc_watch, similar, similar_routes
from gateway.batch_routes import router as batch_router
from gateway.components import Components, build_components
from gateway.edge.admission import AdaptiveLimit
from gateway.edge.limits import LimitsMiddleware, SecurityMetrics
from gateway.edge.middleware import GatewayMiddleware
from gateway.edge.security import AuthMiddleware, build_security
from gateway.eventsink import EventSink
from gateway.feedback import router as events_router
from gateway.handlers import install_error_handlers
from gateway.metrics import GatewayMetrics
from gateway.readiness import UpstreamReadiness
from gateway.rollout import wiring as rollout_wiring
from gateway.rollout.metrics import RolloutMetrics
from gateway.routes import openapi_with_limits, router
from gateway.schemas import BATCH_PATH, EVENTS_PATH
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

ComponentsFactory = Callable[[GatewaySettings, GatewayMetrics], Awaitable[Components]]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build the components, start the background tasks; undo it all at shutdown."""
    settings: GatewaySettings = app.state.settings
    metrics: GatewayMetrics = app.state.metrics
    provider = configure_tracing(service_name="gateway")
    built = await app.state.components_factory(settings, metrics)
    built.chain.saturated = app.state.admission.saturated  # skip ALS while the loop is overloaded
    if built.similar is None:  # a components factory without one: popular items answer
        built.similar = similar.popular_only(
            settings, metrics, config=built.chain.config, popular=built.popular
        )
    built.similar.saturated = app.state.admission.saturated
    rollout = await rollout_wiring.start(  # off unless GATEWAY_ROLLOUT_REDIS_URL is set
        built.chain, app.state.rollout_metrics, model=settings.triton_model,
        saturated=app.state.admission.saturated, settings=getattr(app.state, "rollout", None),
    )  # fmt: skip
    app.state.components = built
    app.state.readiness = UpstreamReadiness(built)
    await app.state.security.start()
    snap = built.popular.snapshot
    metrics.popular_items.set(len(snap.items) if snap else 0)
    tasks = [asyncio.create_task(background.watch_loop_lag(metrics, app.state.admission))]
    events: EventSink = app.state.events
    # In the background: recommendations never wait for (or on) the event log.
    tasks.append(asyncio.create_task(events.run()))
    if settings.popular_refresh_s > 0:
        tasks.append(
            asyncio.create_task(
                background.refresh_popular(built, settings.popular_refresh_s, metrics)
            )
        )
    unwatch_gc = gc_watch.watch(metrics.gc_pause)
    if settings.gc_freeze:
        await _warm_up(built)
        logger.info("gc: %d startup objects frozen", gc_watch.freeze_startup_objects())
    logger.info(
        "gateway ready: popular=%s primary=%s mf=%s",
        built.popular.version,
        redact_url(settings.triton_url),
        redact_url(settings.mf_url),
    )
    try:
        yield
    finally:
        await rollout.close()
        stuck = await stop_tasks(tasks)
        if stuck:
            logger.warning("background tasks still running after shutdown began: %s", stuck)
        unwatch_gc()
        await events.close()
        await built.close()
        await app.state.security.close()
        provider.shutdown()
        logger.info("gateway stopped: clients closed")


async def _warm_up(built: Components) -> None:
    """One recommendation through the whole chain before the freeze, so what the first request
    allocates lazily (gRPC channel state, Redis connections, validators) is frozen with the
    startup objects: otherwise the first full collection after start walks it all (287-301 ms
    pauses seen in drill D9, a few seconds into traffic). Its outcome does not matter."""
    outcome = await built.chain.recommend(user_id=0, k=1, exclude=[])
    logger.info("warm-up request served by %s", outcome.tier.value)


def create_app(
    settings: GatewaySettings | None = None, *, components: ComponentsFactory | None = None
) -> FastAPI:
    """The gateway app. ``settings`` default to the environment (``GATEWAY_*``)."""
    settings = settings or GatewaySettings()
    metrics = GatewayMetrics()
    security = build_security(settings, SecurityMetrics(metrics.registry))  # refuses unsafe configs
    admission = AdaptiveLimit(
        ceiling=settings.max_in_flight,
        floor=settings.min_in_flight,
    )
    metrics.in_flight_limit.set(admission.limit)
    app = FastAPI(
        title="Cascade gateway",
        version="1.0",
        summary="Personalized top-k recommendations that always answer in time.",
        lifespan=lifespan,
        # FastAPI's native telemetry adds spans and metrics per request (~0.7 ms of CPU measured
        # by the MF service); ours are one span tree and the middleware's metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        docs_url=None,  # served from this process, not a CDN: serve_docs_offline below
        redoc_url=None,
    )
    serve_docs_offline(app)
    app.state.settings, app.state.metrics, app.state.security = settings, metrics, security
    app.state.admission, app.state.components_factory = admission, components or build_components
    app.state.rollout_metrics = RolloutMetrics(metrics.registry)  # exported even with rollouts off
    app.state.events = EventSink(settings)
    eventsink.register(app.state.events, metrics.registry)
    # Outermost last: GatewayMiddleware (request id, 413, metrics, last resort) > limits (431,
    # 503) > auth (401, 429).
    app.add_middleware(AuthMiddleware, security=security)
    app.add_middleware(LimitsMiddleware, metrics=security.metrics, admission=admission,
                       max_header_bytes=settings.max_header_bytes,
                       queue_shed_s=settings.queue_shed_s)  # fmt: skip
    app.add_middleware(GatewayMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       request_start_header=settings.request_start_header,
                       trusted_proxies=settings.trusted_proxies,
                       path_body_bytes={EVENTS_PATH: settings.events_max_body_bytes,
                                        BATCH_PATH: settings.batch_max_body_bytes})  # fmt: skip
    install_error_handlers(app, metrics)
    app.include_router(router)
    app.include_router(batch_router)
    app.include_router(events_router)
    app.include_router(similar_routes.router)
    app.openapi = lambda: similar_routes.document_limits(  # type: ignore[method-assign]
        openapi_with_limits(app, settings), settings
    )
    return app
