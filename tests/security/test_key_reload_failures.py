"""Issue 20, item 13: a key file that fails to reload is counted, not only logged.

A failed reload keeps the previous key set, so a key revoked in the new (broken) file stays
valid: ``gateway_api_keys_reload_failures_total`` counts it, ``gateway_api_keys_reload_failing``
stays 1 until a good file loads, and ``CascadeApiKeysReloadFailing`` fires on them
(deploy/prometheus/alerts_test.yml).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from gateway.edge import keys
from gateway.main import create_app
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import Fakes
from tests.security.test_gateway_security import Keys, bearer, secure_settings

URL = "/v1/recommendations"


def metric(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[-1])


def wait_until(client: AppClient, predicate, timeout_s: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return True
        client.loop.run_until_complete(asyncio.sleep(0.05))  # the reload runs in a worker thread
    return predicate()


def test_a_broken_key_file_is_counted_and_flagged_until_fixed(tmp_path: Path) -> None:
    k = Keys(tmp_path)
    app = create_app(secure_settings(k), components=Fakes().factory)
    with AppClient(app) as client:
        good = k.path.read_text()
        assert metric(client.get("/metrics").text, "gateway_api_keys_reload_failing") == 0
        # A hand edit gone wrong, meant to revoke the good key: the old keys stay in force.
        k.path.write_text(good[: len(good) // 2])
        os.utime(k.path, ns=(1, 1))  # a new mtime even on a coarse clock
        assert wait_until(
            client,
            lambda: (
                metric(client.get("/metrics").text, "gateway_api_keys_reload_failures_total") >= 1
            ),
        )
        text = client.get("/metrics").text
        assert metric(text, "gateway_api_keys_reload_failing") == 1
        assert client.get(f"{URL}/7", headers=bearer(k.good)).status_code == 200  # still valid
        # Fixed: the good file (with the revocation) loads; the flag clears, the count stays.
        k.path.write_text(good)
        keys.revoke(k.path, key_id=k.good_record.key_id)
        assert wait_until(
            client,
            lambda: metric(client.get("/metrics").text, "gateway_api_keys_reload_failing") == 0,
        )
        assert client.get(f"{URL}/7", headers=bearer(k.good)).status_code == 401
        assert metric(client.get("/metrics").text, "gateway_api_keys_reload_failures_total") == 1
