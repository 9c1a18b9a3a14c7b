"""A broken model in a real tritonserver: clients get only valid answers and the breaker opens.

Real processes: a ``tritonserver`` of its own serving ``broken_model/model.py`` as the
``two_tower`` model (the contract's config, answers of NaN scores and one repeated id), and a
gateway of its own pointed at it, with the integration stack's Redis/Feast and MF service.
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cascade.runtime.procs import ManagedProcess, free_port
from tests.integration.conftest import DATASET, GATEWAY_ENV, GatewayStack
from tests.integration.test_gateway_resilience import check_contract, metric
from two_tower.triton_config import render_config

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def broken_gateway(gateway_stack: GatewayStack, tmp_path_factory) -> Iterator[str]:
    from two_tower.triton_server import TritonProcess, TritonSettings

    gateway_stack.heal()
    tmp = tmp_path_factory.mktemp("broken_model")
    version = tmp / "repo" / "two_tower" / "1"
    version.mkdir(parents=True)
    shutil.copy(HERE / "broken_model" / "model.py", version / "model.py")
    (version.parent / "config.pbtxt").write_text(render_config())
    triton = TritonProcess(
        TritonSettings(
            model_repository=tmp / "repo",
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            otlp_endpoint=None,
        ),
        log_path=tmp / "triton.log",
    )
    gateway_port = free_port()
    env = dict(
        gateway_stack.env,
        **{**GATEWAY_ENV, "GATEWAY_BREAKER_WAIT_S": "30"},  # once open, open for the whole test
        GATEWAY_PORT=str(gateway_port),
        GATEWAY_TRITON_URL=triton.grpc_url,
        GATEWAY_MF_URL=f"http://127.0.0.1:{gateway_stack.mf_port}",
        GATEWAY_DATASET=DATASET,
        GATEWAY_ARTIFACTS_DIR=str(gateway_stack.layout.artifacts_dir),
    )
    gateway = ManagedProcess(
        "gateway-broken", [sys.executable, "-m", "gateway"], log_path=tmp / "gateway.log", env=env
    )
    try:
        triton.start()
        triton.wait_ready(timeout=120)
        gateway.start()
        gateway.wait_ready(f"http://127.0.0.1:{gateway_port}/readyz", timeout=90)
        yield f"http://127.0.0.1:{gateway_port}"
    finally:
        gateway.stop(grace=10)
        triton.stop()


def test_broken_model_never_reaches_a_client_and_opens_the_breaker(
    gateway_stack: GatewayStack, broken_gateway: str
) -> None:
    users = [int(u) for u in gateway_stack.users()[:30]]
    tiers, reasons = [], []
    with httpx.Client(base_url=broken_gateway, timeout=5) as http:
        for n in range(60):
            user = users[n % len(users)]
            r = http.get(f"/v1/recommendations/{user}", params={"k": 10})
            assert r.status_code == 200, r.text
            body = r.json()
            assert all(
                isinstance(i["score"], float) and math.isfinite(i["score"]) for i in body["items"]
            )
            check_contract(gateway_stack, body, k=10)
            tiers.append(body["served_by"])
            reasons.append(body["fallback_reason"])
        invalid = metric(http, "gateway_invalid_answers_total", tier="two_tower")
        opened = metric(http, "gateway_breaker_transitions_total", to_state="open")
    assert "two_tower" not in tiers
    assert set(reasons) <= {"error", "breaker_open"}
    assert "breaker_open" in reasons, reasons
    # Judged after 10 calls (GATEWAY_ENV): it opens on the first verdict, then stays open.
    assert 10 <= invalid <= 12 and opened == 1, (invalid, opened)
