"""``python -m events``: the events consumer (:mod:`events.main`), JSON logging, then one uvicorn
server for its probes and metrics.

SIGTERM / SIGINT: uvicorn stops, the lifespan shutdown finishes the batch in hand, writes the
offline buffer, acks, and the process exits 0. A configuration error exits 2 with one line.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from cascade.runtime.feature_store import FeatureStoreError
from cascade.runtime.serve import run_service
from cascade.runtime.service_logging import configure_logging
from events.main import SERVICE_NAME, ConfigError, create_app, preflight
from events.settings import EventsSettings


def main() -> int:
    """Run the consumer in the foreground until SIGTERM/SIGINT."""
    try:
        settings = EventsSettings()
    except ValidationError as exc:
        print(f"events: bad settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(service=SERVICE_NAME, level=settings.log_level, json_logs=settings.json_logs)
    try:
        store = preflight(settings)
    except (ConfigError, FeatureStoreError) as exc:
        print(f"events: {exc}", file=sys.stderr)
        return 2
    return run_service(create_app(settings, store), host=settings.host, port=settings.port)


if __name__ == "__main__":
    sys.exit(main())
