"""Issue 20, item 5, through the whole gateway: two gateway apps (two replicas) share one
rate-limit Redis that is down; one key sends far above its rate, alternating between them. With
``GATEWAY_RATE_LIMIT_REPLICAS=2`` the total they allow stays within what one shared bucket
allows (``burst + rate x elapsed``) plus a stated margin of one token per replica, and each
counts the Redis errors that ``CascadeRateLimitRedisErrors`` alerts on."""

from __future__ import annotations

import time
from pathlib import Path

from cascade.runtime.procs import free_port
from gateway.edge import keys
from gateway.main import create_app
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import Fakes
from tests.gateway.test_api import make_settings

RATE, BURST = 10, 10


def test_two_gateways_with_the_rate_limit_redis_down(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    _, key = keys.add_key(path, client="web", rate=RATE, burst=BURST)
    settings = make_settings(
        api_keys_file=path,
        rate_limit_redis_url=f"redis://:pw@127.0.0.1:{free_port()}/0",  # nothing listens
        rate_limit_replicas=2,
    )
    gateways = [AppClient(create_app(settings, components=Fakes().factory)) for _ in range(2)]
    for gateway in gateways:
        gateway.__enter__()
    try:
        started = time.monotonic()
        statuses = [
            gateways[n % 2].get("/v1/recommendations/7", headers={"X-API-Key": key}).status_code
            for n in range(60)
        ]
        elapsed = time.monotonic() - started
        texts = [gateway.get("/metrics").text for gateway in gateways]
    finally:
        for gateway in gateways:
            gateway.__exit__(None, None, None)
    allowed = statuses.count(200)
    assert set(statuses) == {200, 429}
    assert allowed <= BURST + RATE * elapsed + 2, (allowed, elapsed)
    for text in texts:
        errors = [
            line
            for line in text.splitlines()
            if line.startswith("gateway_ratelimit_redis_errors_total ")
        ]
        assert errors and float(errors[0].split()[-1]) >= 1
        assert 'gateway_ratelimit_decisions_total{backend="local"}' in text
