"""The fallback MF service: ``create_app(settings=None)`` builds the FastAPI app.

The lifespan owns the state on ``app.state``: settings, the :class:`ModelStore` (loaded before
the first request), metrics, the tracer, and the task that follows the ``latest`` pointer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cascade.runtime.api_docs import serve_docs_offline
from cascade.runtime.telemetry import configure_tracing
from fallback_mf.schemas import ErrorResponse
from fallback_mf.service.admin import ReloadThrottle
from fallback_mf.service.api import router
from fallback_mf.service.errors import MfServiceError, ReloadFailed
from fallback_mf.service.metrics import ServiceMetrics
from fallback_mf.service.middleware import ObservabilityMiddleware
from fallback_mf.service.model import Loader, ModelStore, ServedData, load_artifact
from fallback_mf.service.settings import MfSettings
from fallback_mf.service.similar import router as similar_router

logger = logging.getLogger(__name__)
SERVICE_NAME = "fallback-mf"


async def _render_error(request: Request, exc: Exception) -> JSONResponse:
    """The one handler for domain errors: their status, ``{"code", "detail"}``."""
    assert isinstance(exc, MfServiceError)
    body = ErrorResponse(code=exc.code, detail=exc.detail)
    if exc.status_code >= 500:
        # the route template, not the path: the path holds the user id (issue 20)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        logger.warning("%s %s -> %d %s", request.method, route, exc.status_code, exc.detail)
    return JSONResponse(status_code=exc.status_code, content=body.model_dump(), headers=exc.headers)


async def _follow_latest(store: ModelStore, metrics: ServiceMetrics, interval_s: float) -> None:
    """Reload when ``latest`` names a new version; also retries a failed first load."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            _, _, changed = await store.reload(force=not store.ready)
        except ReloadFailed as exc:
            metrics.reloads.labels("failed").inc()
            logger.warning(
                "periodic reload failed, still serving the previous model: %s", exc.detail
            )
            continue
        metrics.reloads.labels("loaded" if changed else "unchanged").inc()


def create_app(settings: MfSettings | None = None, *, loader: Loader = load_artifact) -> FastAPI:
    """Build the app. ``loader`` turns a version folder into a model (tests inject their own)."""
    settings = settings or MfSettings()
    metrics = ServiceMetrics()
    tracer_provider = configure_tracing(service_name=SERVICE_NAME)
    store = ModelStore(
        artifacts_dir=settings.artifacts_dir,
        pinned_version=settings.version,
        loader=loader,
        served_data=(
            ServedData(settings.dataset, settings.data_checksum) if settings.dataset else None
        ),
    )
    store.on_swap = metrics.model_swapped

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await store.reload()
            metrics.reloads.labels("loaded").inc()
        except ReloadFailed as exc:
            metrics.reloads.labels("failed").inc()
            if settings.reload_interval_s <= 0:
                raise  # nothing would ever retry: fail the start loudly
            logger.error(
                "no model at startup (%s); not ready, retrying every %.0fs",
                exc.detail,
                settings.reload_interval_s,
            )
        watcher = None
        if settings.reload_interval_s > 0:
            watcher = asyncio.create_task(
                _follow_latest(store, metrics, settings.reload_interval_s)
            )
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            tracer_provider.shutdown()

    app = FastAPI(
        title="Cascade fallback MF service",
        summary="ALS top-k recommendations: the CPU tier behind the gateway's circuit breaker.",
        version="1.0",
        lifespan=lifespan,
        # FastAPI's native telemetry would add spans for dependency resolution, serialization...
        # (5 spans a request, measured ~0.7 ms of CPU here); our middleware makes one server span.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        docs_url=None,  # served from this process, not a CDN: serve_docs_offline below
        redoc_url=None,
    )
    serve_docs_offline(app)
    app.state.settings = settings
    app.state.store = store
    app.state.reload_throttle = ReloadThrottle(settings.reload_min_interval_s)
    app.state.metrics = metrics
    app.state.tracer_provider = tracer_provider
    app.include_router(router)
    app.include_router(similar_router)
    app.add_exception_handler(MfServiceError, _render_error)
    app.add_middleware(
        ObservabilityMiddleware, metrics=metrics, tracer=tracer_provider.get_tracer("fallback_mf")
    )
    return app
