"""Issue 20, item 9: a gateway that falls back to the MF service, logging at INFO, writes no
user id (nor the exclusions) in any log line, its own or the MF service's; its warnings carry
the request id instead. Real processes: ``python -m fallback_mf`` and ``python -m gateway``
(Triton unreachable and no features, so requests fall back to ALS; then the MF service is
stopped, so one more fails over to popular with a warning), JSON logs at INFO.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from cascade.runtime.procs import ManagedProcess, free_port
from fallback_mf.artifact_format import als_root
from fallback_mf.artifacts import save_als
from tests.fallback_mf.service_helpers import tiny_model

pytestmark = pytest.mark.integration

USER_OFFSET = 7_340_000  # ids that cannot occur by chance in a timestamp, a port or a pid
KNOWN, UNKNOWN, EXCLUDED = 7_340_005, 9_182_736_450, 6_660_001


def test_falling_back_to_mf_at_info_logs_no_user_id(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    save_als(tiny_model(seed=1, user_offset=USER_OFFSET), artifacts_dir=artifacts, version="v1")
    mf_port, gw_port, dead_port = free_port(), free_port(), free_port()
    base_env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT="", CASCADE_HOME=str(tmp_path))
    mf_env = dict(
        base_env,
        MF_PORT=str(mf_port),
        MF_ARTIFACTS_DIR=str(als_root(artifacts)),
        MF_RELOAD_INTERVAL_S="0",
        MF_LOG_LEVEL="INFO",
    )
    gw_env = dict(
        base_env,
        GATEWAY_PORT=str(gw_port),
        GATEWAY_TRITON_URL=f"127.0.0.1:{dead_port}",  # nothing listens: every call fails
        GATEWAY_MF_URL=f"http://127.0.0.1:{mf_port}",
        GATEWAY_FEATURES_ENABLED="false",
        GATEWAY_ARTIFACTS_DIR=str(artifacts),
        GATEWAY_AUTH_ENABLED="false",
        GATEWAY_LOG_LEVEL="INFO",
        GATEWAY_GC_FREEZE="false",
    )
    mf = ManagedProcess(
        "mf", [sys.executable, "-m", "fallback_mf"], log_path=tmp_path / "mf.log", env=mf_env
    )
    gw = ManagedProcess(
        "gw", [sys.executable, "-m", "gateway"], log_path=tmp_path / "gw.log", env=gw_env
    )
    request_ids = []
    with mf:
        mf.wait_ready(f"http://127.0.0.1:{mf_port}/readyz", timeout=60)
        with gw:
            gw.wait_ready(f"http://127.0.0.1:{gw_port}/readyz", timeout=60)
            with httpx.Client(base_url=f"http://127.0.0.1:{gw_port}", timeout=10) as http:
                for _ in range(3):
                    r = http.get(f"/v1/recommendations/{KNOWN}", params={"k": 5})
                    assert r.status_code == 200 and r.json()["served_by"] == "als", r.text
                    request_ids.append(r.json()["request_id"])
                r = http.post(
                    "/v1/recommendations", json={"user_id": UNKNOWN, "k": 5, "exclude": [EXCLUDED]}
                )
                assert r.status_code == 200 and r.json()["served_by"] == "popular"
                request_ids.append(r.json()["request_id"])
                mf.stop(grace=15)  # the next fallback fails: a warning about that request
                r = http.get(f"/v1/recommendations/{KNOWN}", params={"k": 5})
                assert r.status_code == 200 and r.json()["served_by"] == "popular"
                request_ids.append(r.json()["request_id"])
            gw.stop(grace=15)
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("gw", "mf")}
    for name, text in logs.items():
        for secret in (KNOWN, UNKNOWN, EXCLUDED):
            assert str(secret) not in text, f"{name}.log names {secret}:\n{text[-3000:]}"
    lines = [json.loads(line) for line in logs["gw"].splitlines() if line.startswith("{")]
    warnings = [line for line in lines if line["level"] == "warning"]
    assert warnings, logs["gw"][-3000:]  # the MF failure was logged...
    assert {line.get("request_id") for line in warnings} & set(request_ids)  # ...with its request
    assert not [line for line in lines if line["logger"].startswith(("httpx", "aiohttp"))]
