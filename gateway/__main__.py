"""``python -m gateway``: JSON logging, then uvicorn with one worker (scale with replicas)."""

from __future__ import annotations

import os

import uvicorn

from cascade.service_logging import configure_logging
from gateway.main import create_app
from gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    configure_logging(service="gateway", level=settings.log_level, json_logs=settings.json_logs)
    # uvicorn handles SIGTERM/SIGINT: stops accepting, drains in-flight requests, runs the lifespan
    # shutdown (which closes the clients) within the graceful timeout.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
