"""One way to run a service's ASGI app: one uvicorn worker, our logging, a graceful stop.

Every entry point (``python -m gateway``, ``python -m fallback_mf``, ``python -m events``, the
bench's bare app) calls :func:`run_service`, so they stop the same way: on SIGTERM/SIGINT uvicorn
stops accepting, finishes the requests in flight (up to ``GRACEFUL_SHUTDOWN_S``), runs the
lifespan shutdown, and the process exits 0.
"""

from __future__ import annotations

import signal
from typing import Any

import uvicorn

GRACEFUL_SHUTDOWN_S = 10  # the longest a stop waits for requests in flight


def run_service(app: Any, *, host: str, port: int) -> int:
    """Serve ``app`` in the foreground until SIGTERM/SIGINT; 0 after a clean stop, 1 when the
    server never started (the port was taken, the lifespan failed)."""
    # uvicorn re-raises the signal it shut down on; with these no-op handlers installed first,
    # that re-raise is harmless and a graceful stop exits 0 instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=1,  # scale with replicas, not workers
        log_config=None,  # keep the service's JSON logging
        access_log=False,  # the metrics count every request; per-request lines cost ~10%
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
