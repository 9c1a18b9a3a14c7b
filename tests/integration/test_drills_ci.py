"""Shortened fault drills D1, D2, D5, D6, D9 and D10 on the integration stack (real processes), in CI.

The same drill and criteria code as ``make drill`` (``cascade.drills.drills``), with
``Plan.ci()`` durations and the stack of ``conftest.py`` (breaker judged after 10 calls, open
for 2 s). Asserted: the behavioural checks (non-2xx counts, tier served, breaker states,
recovery). Latency thresholds (checks marked ``timing``) are printed, not asserted: this machine
is shared and noisy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cascade.drills.analysis import DrillResult
from cascade.drills.drills import DRILLS, Plan
from cascade.drills.report import drill_table
from cascade.drills.target import DrillTarget, GatewayFacts
from tests.integration.conftest import DATASET, GATEWAY_ENV, GatewayStack

pytestmark = pytest.mark.integration

PLAN = Plan.ci()


def _target(stack: GatewayStack) -> DrillTarget:
    def restore(name: str) -> None:
        if name == "redis":  # this Redis keeps nothing on disk: fill it again
            stack.start_redis()
            _materialize_in_a_child(stack)
        elif name == "triton":
            stack.start_triton()
        elif name == "mf":
            stack.start_mf()
        else:
            raise ValueError(name)

    return DrillTarget(
        url=stack.url,
        gateway_pid=stack.procs["gateway"].pid,
        users=[int(u) for u in stack.users()],
        procs=stack.procs,
        restore=restore,
        heal=stack.heal,
        facts=GatewayFacts.from_env(GATEWAY_ENV),
    )


def _materialize_in_a_child(stack: GatewayStack) -> None:
    """Feast materialization in its own process: in a thread of this one it would hold the GIL
    for seconds and starve the load generator, and the drill would measure itself."""
    code = (
        "from cascade.features import store; from cascade.runtime.paths import Layout; "
        f"store.apply(layout=Layout.from_env(), dataset={DATASET!r}); "
        f"store.materialize(layout=Layout.from_env(), dataset={DATASET!r}, full=True)"
    )
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ), check=True, timeout=120,
                   capture_output=True)  # fmt: skip


@pytest.fixture
def target(gateway_stack: GatewayStack) -> Iterator[DrillTarget]:
    gateway_stack.heal()
    yield _target(gateway_stack)
    gateway_stack.heal()  # leave the stack healthy for whoever comes next


def _run(name: str, target: DrillTarget) -> DrillResult:
    result = asyncio.run(DRILLS[name](target, PLAN))
    print("\n" + drill_table([result]))
    failed = result.failed_checks(include_timing=False)
    assert result.behaviour_passed, f"{name} failed: {failed}\n{drill_table([result])}"
    return result


def test_d1_triton_killed_every_request_served_by_a_fallback(target: DrillTarget) -> None:
    _run("D1", target)


def test_d2_triton_frozen_then_resumed(target: DrillTarget) -> None:
    _run("D2", target)


def test_d10_overload_then_recovery(target: DrillTarget) -> None:
    """2x the measured capacity for 10 s, open loop: the gateway sheds and falls back while it
    lasts, and the fallback and 503 shares return to their baseline after it (no metastable
    mode). The recovery limit is CI's slack x 5 s: behaviour, not speed, is asserted."""
    plan = dataclasses.replace(PLAN, overload_s=10.0, overload_after_s=20.0)
    result = asyncio.run(DRILLS["D10"](target, plan))
    print("\n" + drill_table([result]))
    failed = result.failed_checks(include_timing=False)
    assert result.behaviour_passed, f"D10 failed: {failed}\n{drill_table([result])}"


def test_d5_triton_and_mf_down_popular_serves(target: DrillTarget) -> None:
    _run("D5", target)


def test_d6_redis_killed_then_frozen(target: DrillTarget) -> None:
    _run("D6", target)


@pytest.fixture(scope="module")
def proxied_target(gateway_stack: GatewayStack, tmp_path_factory) -> Iterator[DrillTarget]:
    """The stack with a gRPC fault proxy (its own hub process) in front of Triton, and a
    gateway of its own behind that proxy: what D9 needs and the plain stack lacks."""
    from cascade.drills.fault_modes import Pass
    from cascade.drills.proxyhub import ProxySpec, start_hub
    from cascade.runtime.procs import ManagedProcess, free_port

    gateway_stack.heal()
    tmp = tmp_path_factory.mktemp("proxied")
    triton_grpc = int(gateway_stack.procs["triton"].grpc_url.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    spec = ProxySpec("triton", free_port(), "127.0.0.1", triton_grpc, True)
    hub, proxies = start_hub(
        [spec], control_port=free_port(), sink_port=None, log_path=tmp / "proxyhub.log"
    )
    port = free_port()
    env = dict(
        gateway_stack.env,
        **GATEWAY_ENV,
        GATEWAY_PORT=str(port),
        GATEWAY_TRITON_URL=f"127.0.0.1:{spec.listen_port}",
        GATEWAY_MF_URL=f"http://127.0.0.1:{gateway_stack.mf_port}",
        GATEWAY_DATASET=DATASET,
        GATEWAY_ARTIFACTS_DIR=str(gateway_stack.layout.artifacts_dir),
    )
    gateway = ManagedProcess(
        "gateway-proxied", [sys.executable, "-m", "gateway"], log_path=tmp / "gw.log", env=env
    )
    url = f"http://127.0.0.1:{port}"

    def heal() -> None:
        proxies["triton"].set_mode(Pass())
        gateway_stack.heal()
        _wait_for_primary(url, gateway_stack.known_user)

    try:
        gateway.start()
        gateway.wait_ready(f"{url}/readyz", timeout=90)
        heal()
        target = _target(gateway_stack)
        yield DrillTarget(
            url=url,
            gateway_pid=gateway.pid,
            users=target.users,
            procs=target.procs,
            restore=target.restore,
            heal=heal,
            facts=target.facts,
            proxies=proxies,
        )
    finally:
        gateway.stop(grace=10)
        hub.stop(grace=5)


def _wait_for_primary(url: str, user: int, timeout_s: float = 60.0) -> None:
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=5) as http:
        while time.monotonic() < deadline:
            body = http.get(f"/v1/recommendations/{user}?k=5").json()
            if body["served_by"] == "two_tower":
                return
            time.sleep(0.1)
    raise AssertionError("the proxied gateway's primary did not serve")


def test_d9_primary_answers_garbage(proxied_target: DrillTarget) -> None:
    proxied_target.heal()
    try:
        _run("D9", proxied_target)
    finally:
        proxied_target.heal()
