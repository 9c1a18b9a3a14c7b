"""HTTP routes of the events consumer: probes and metrics only (it takes no requests)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from events.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/healthz", tags=["probes"])
async def healthz(request: Request) -> JSONResponse:
    """200 while the consumer's loops run; 503 once one died (restart the process)."""
    consumer = request.app.state.consumer
    alive = consumer is None or consumer.alive()
    return JSONResponse(
        status_code=200 if alive else 503, content={"status": "ok" if alive else "dead"}
    )


@router.get("/readyz", tags=["probes"])
async def readyz(request: Request) -> JSONResponse:
    """200 when connected to the log and the online store takes writes; 503 otherwise."""
    consumer = request.app.state.consumer
    checks = {
        "started": "ok" if consumer is not None and consumer.health.started else "no",
        "log": "ok" if consumer is not None and consumer.log.is_connected else "unavailable",
        "online_store": "ok" if consumer is not None and consumer.health.redis else "unavailable",
    }
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not_ready", "checks": checks},
    )


@router.get("/metrics", tags=["probes"])
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(content=request.app.state.metrics.exposition(), media_type=CONTENT_TYPE)
