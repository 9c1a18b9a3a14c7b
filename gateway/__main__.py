"""``python -m gateway``: JSON logging, then one uvicorn worker (scale with replicas).

SIGTERM / SIGINT: uvicorn stops accepting, finishes the requests in flight (up to 10 s), runs the
lifespan shutdown (which closes the Triton, MF and Feast clients), and the process exits 0.
"""

from __future__ import annotations

import os

# BLAS single-threaded in a service; set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys

from cascade.runtime.serve import run_service
from cascade.runtime.service_logging import configure_logging
from gateway.main import create_app
from gateway.settings import GatewaySettings


def main() -> int:
    """Run the gateway in the foreground until SIGTERM/SIGINT."""
    settings = GatewaySettings()
    configure_logging(service="gateway", level=settings.log_level, json_logs=settings.json_logs)
    return run_service(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    sys.exit(main())
