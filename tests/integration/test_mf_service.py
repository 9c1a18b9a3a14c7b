"""``python -m fallback_mf`` as a real process: readiness, HTTP answers, hot reload under load,
graceful SIGTERM shutdown. Artifacts are real ones written by ``fallback_mf.artifacts.save_als``."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from cascade.runtime.procs import ManagedProcess, free_port
from fallback_mf.artifacts import als_root, save_als
from tests.fallback_mf.test_service import tiny_model

pytestmark = pytest.mark.integration


def _wait_for_more(statuses: list[int], n: int, timeout: float = 10.0) -> None:
    """Let the hammering thread answer ``n`` more requests (so reloads happen mid-traffic)."""
    target, deadline = len(statuses) + n, time.monotonic() + timeout
    while len(statuses) < target and time.monotonic() < deadline:
        time.sleep(0.01)


def test_real_process_serves_reloads_and_stops_cleanly(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    v1 = save_als(tiny_model(seed=1), artifacts_dir=artifacts, version="v1").name
    port = free_port()
    env = dict(os.environ)
    env.update(
        MF_PORT=str(port),
        MF_ARTIFACTS_DIR=str(als_root(artifacts)),
        MF_RELOAD_INTERVAL_S="0",
        MF_RELOAD_MIN_INTERVAL_S="0",  # the test reloads back to back
        OTEL_EXPORTER_OTLP_ENDPOINT="",
    )
    base = f"http://127.0.0.1:{port}"
    proc = ManagedProcess(
        "mf", [sys.executable, "-m", "fallback_mf"], log_path=tmp_path / "mf.log", env=env
    )
    with proc:
        proc.wait_ready(f"{base}/readyz", timeout=60)
        with httpx.Client(base_url=base, timeout=5) as http:
            body = http.get("/v1/recommendations/103", params={"k": 5, "exclude": "1001"}).json()
            assert body["known_user"] and body["model_version"] == v1 and len(body["items"]) == 5
            assert http.get("/v1/recommendations/7").json()["known_user"] is False
            assert http.get("/v1/recommendations/x").status_code == 422

            # reload while another thread keeps requesting: every answer is a 200
            statuses: list[int] = []
            stop = threading.Event()

            def hammer() -> None:
                with httpx.Client(base_url=base, timeout=5) as h:
                    while not stop.is_set():
                        statuses.append(
                            h.get("/v1/recommendations/104", params={"k": 10}).status_code
                        )

            worker = threading.Thread(target=hammer)
            worker.start()
            try:
                for n in (2, 3):
                    _wait_for_more(statuses, 5)
                    version = save_als(
                        tiny_model(seed=n), artifacts_dir=artifacts, version=f"v{n}"
                    ).name
                    r = http.post("/admin/reload")
                    assert r.status_code == 200 and r.json()["model_version"] == version
                _wait_for_more(statuses, 5)
            finally:
                stop.set()
                worker.join(timeout=10)
            assert len(statuses) > 5 and set(statuses) == {200}
            assert http.get("/readyz").json()["model_version"] == "v3"
            assert 'mf_model_info{version="v3"} 1.0' in http.get("/metrics").text
        code = proc.stop(grace=15)
    assert code == 0, proc.log_tail()
    log = (tmp_path / "mf.log").read_text()
    assert "Finished server process" in log and "Traceback" not in log
