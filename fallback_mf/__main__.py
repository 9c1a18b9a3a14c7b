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

import sys

from cascade.runtime.serve import run_service
from cascade.runtime.service_logging import configure_logging
from fallback_mf.service.main import SERVICE_NAME, create_app
from fallback_mf.service.settings import MfSettings


def main() -> int:
    """Run the service in the foreground until SIGTERM/SIGINT."""
    settings = MfSettings()
    configure_logging(service=SERVICE_NAME, level=settings.log_level, json_logs=settings.json_logs)
    return run_service(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    sys.exit(main())
