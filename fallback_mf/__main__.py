"""``python -m fallback_mf``: the MF service (:mod:`fallback_mf.service`), JSON logging, then
one uvicorn worker (scale with replicas).

SIGTERM / SIGINT: uvicorn stops accepting, finishes the requests in flight, runs the lifespan
shutdown, and the process exits 0.
"""

from __future__ import annotations

import os

# BLAS must be single-threaded in a service (one request, one core; no oversubscription).
# Set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import signal
import sys

import uvicorn

from cascade.runtime.service_logging import configure_logging
from fallback_mf.service.main import SERVICE_NAME, create_app
from fallback_mf.service.settings import MfSettings


def main() -> int:
    """Run the service in the foreground until SIGTERM/SIGINT."""
    settings = MfSettings()
    configure_logging(service=SERVICE_NAME, level=settings.log_level, json_logs=settings.json_logs)
    # uvicorn re-raises the signal it shut down on; with these no-op handlers in place that
    # re-raise is harmless and a graceful stop exits 0 instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_config=None,  # keep our JSON logging
        access_log=False,  # the metrics count every request; per-request lines cost ~10% here
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
