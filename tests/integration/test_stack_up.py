"""``cascade up`` end to end: tiny data, free ports, a real gateway answer, ``cascade status``,
``cascade down``, no child left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from cascade.runtime.procs import free_port
from cascade.stack_build import DEFAULT_REDIS_URL, redis_reachable

pytestmark = pytest.mark.integration


def _wait_for_banner(proc: subprocess.Popen[bytes], out: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Cascade is up." in out.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            pytest.fail(f"cascade up exited {proc.returncode}:\n{out.read_text()[-5000:]}")
        time.sleep(0.5)
    pytest.fail(f"cascade up not ready after {timeout:.0f}s:\n{out.read_text()[-5000:]}")


def _alive(pids: list[int]) -> list[psutil.Process]:
    """Processes still alive whose process group is one of the children's (grandchildren too)."""
    left = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and os.getpgid(p.pid) in pids:
                left.append(p)
        except (psutil.Error, ProcessLookupError):
            continue
    return left


@pytest.fixture
def feast_project():
    """A unique Feast project (Redis keys end with it); its keys are deleted afterwards."""
    project = f"stackup{uuid.uuid4().hex[:8]}"
    yield project
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    if redis_reachable(url):
        import redis

        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=b"*" + project.encode(), count=1000):
            client.delete(key)
        client.close()


@pytest.mark.slow  # builds tiny data, ALS and a Two-Tower, starts Triton: 1 to 3 minutes here
def test_cascade_up_serves_and_stops_every_child(tmp_path: Path, feast_project: str) -> None:
    ports = {
        name: free_port()
        for name in (
            "GATEWAY",
            "MF",
            "TRITON_HTTP",
            "TRITON_GRPC",
            "TRITON_METRICS",
            "NATS",
            "NATS_MONITOR",
            "EVENTS",
        )
    }
    env = dict(os.environ, CASCADE_HOME=str(tmp_path / "home"), CASCADE_FEAST_PROJECT=feast_project)
    env.update({f"CASCADE_{name}_PORT": str(port) for name, port in ports.items()})
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    out = tmp_path / "up.out"
    argv = [sys.executable, "-m", "cascade.stack", "--scale", "tiny",
            "--model-repository", str(tmp_path / "triton_models")]  # fmt: skip
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_for_banner(proc, out, timeout=420)
        state = json.loads((tmp_path / "home" / "run" / "stack.json").read_text())
        assert {"fallback_mf", "gateway"} <= set(state)
        gateway = f"http://127.0.0.1:{ports['GATEWAY']}"
        assert gateway in out.read_text() and "curl" in out.read_text()
        key = (tmp_path / "home" / "run" / "dev-api-key").read_text().strip()  # the dev key
        assert f"Authorization: Bearer {key}" in out.read_text()
        assert httpx.get(f"{gateway}/v1/recommendations/40", timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        tiers = set()
        for user in range(40, 50):
            r = httpx.get(
                f"{gateway}/v1/recommendations/{user}", params={"k": 5}, headers=auth, timeout=10
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["items"]) == 5 and r.headers["X-Served-By"] == body["served_by"]
            tiers.add(body["served_by"])
        if "tritonserver" in state:  # the Two-Tower was built: the primary tier serves
            # A probe on a busy machine can time out once: /readyz reports, it does not gate.
            deadline = time.monotonic() + 30
            while True:
                checks = httpx.get(f"{gateway}/readyz", timeout=10).json()["checks"]
                ready = checks["triton"] == "ready" and checks["mf"] == "ready"
                if ready or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert ready, checks
            assert "two_tower" in tiers, tiers
        else:
            assert tiers <= {"als", "popular"}, tiers
        # The event log runs (nats-server -js): an event batch is stored and acknowledged.
        assert "nats-server" in state
        event = {"event_id": "up-1", "user_id": 40, "item_id": 1, "type": "view",
                 "timestamp": time.time()}  # fmt: skip
        deadline = time.monotonic() + 30  # the gateway connects to the log in the background
        while True:
            r = httpx.post(
                f"{gateway}/v1/events", json={"events": [event]}, headers=auth, timeout=10
            )
            if r.status_code == 202 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.status_code == 202, r.text
        pids = [child["pid"] for child in state.values()]
        assert all(psutil.pid_exists(pid) for pid in pids)

        cli = [sys.executable, "-m", "cascade.cli"]
        status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "data set 'tiny'" in status.stdout and "gateway.log" in status.stdout
        # `cascade down` stops it as Ctrl-C does (both signals take the same path).
        down = subprocess.run([*cli, "down"], env=env, capture_output=True, text=True, timeout=90)
        assert down.returncode == 0, down.stdout + down.stderr
        assert proc.wait(timeout=60) == 0, out.read_text()[-3000:]
        assert "stopped." in out.read_text()
        assert _alive(pids) == []
        status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 1 and "stopped cleanly" in status.stdout + status.stderr
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_supervisor_restarts_a_crashed_child_with_backoff(tmp_path: Path) -> None:
    """Explicit clock values drive the backoff; the child is a real process that exits at once."""
    from cascade.runtime.procs import ManagedProcess
    from cascade.supervisor import BACKOFF_START_S, Child, Stack

    crasher = ManagedProcess(
        "crasher", [sys.executable, "-c", "raise SystemExit(3)"], log_path=tmp_path / "c.log"
    )
    child = Child(crasher, "http://127.0.0.1:1/never")
    stack = Stack([child])
    child.start()
    crasher.proc.wait(timeout=10)
    stack.supervise_once(100.0)  # noticed: restart scheduled after the first backoff
    assert child.restart_at == 100.0 + BACKOFF_START_S and child.restarts == 0
    stack.supervise_once(100.5)  # too early
    assert child.restarts == 0
    stack.supervise_once(101.0)
    assert child.restarts == 1
    crasher.proc.wait(timeout=10)
    stack.supervise_once(102.0)  # second crash: the backoff has doubled
    assert child.restart_at == 102.0 + 2 * BACKOFF_START_S
    stack.stop()
