"""``cascade status`` / ``cascade down`` against real processes: a stand-in for ``cascade up``
that answers a readiness URL and stops on SIGTERM, and a state file written the way
``cascade up`` writes it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cascade import stack_status
from cascade.runtime.paths import Layout
from cascade.runtime.procs import free_port

# Serves /readyz like the MF service until SIGTERM, then exits 0 (as cascade up does).
STAND_IN = """
import http.server, json, signal, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ready", "model_version": "20260101T000000Z"}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
server.serve_forever()
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[tuple[Layout, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", STAND_IN, str(port)])
    layout = Layout(home=tmp_path)
    layout.run_dir.mkdir(parents=True)
    created = psutil.Process(proc.pid).create_time()
    url = f"http://127.0.0.1:{port}/readyz"
    entry = {"pid": proc.pid, "create_time": created}
    state = {
        "fallback_mf": {**entry, "ready_url": url, "restarts": 1, "log": "/x/mf.log"},
        "cascade_up": {**entry, "dataset": "tiny", "gateway_url": "http://127.0.0.1:1"},
    }
    stack_status.state_path(layout).write_text(json.dumps(state))
    for _ in range(100):  # until it answers
        if stack_status._probe(url)[0]:
            break
        time.sleep(0.05)
    yield layout, proc
    proc.kill()
    proc.wait(timeout=10)


def test_status_shows_each_process_what_it_serves_and_its_log(stand_in) -> None:
    layout, _ = stand_in
    text, code = stack_status.status_text(layout)
    assert code == 0, text
    assert "data set 'tiny'" in text
    assert "fallback_mf" in text and "ready, 1 restarts" in text
    assert "model 20260101T000000Z" in text and "log /x/mf.log" in text


def test_down_stops_the_stack_then_status_says_none_runs(stand_in) -> None:
    layout, proc = stand_in
    text, code = stack_status.down(layout, timeout_s=20)
    assert code == 0, text
    assert proc.wait(timeout=10) == 0
    text, code = stack_status.status_text(layout)
    assert code == 1 and "left from an earlier" in text
    assert stack_status.down(layout)[1] == 0  # nothing to stop is not an error


def test_a_reused_pid_is_not_the_stack(tmp_path: Path) -> None:
    # A state file left by a stack long gone, whose pid now belongs to this test process.
    layout = Layout(home=tmp_path)
    layout.run_dir.mkdir(parents=True)
    me = psutil.Process()
    stale = {"cascade_up": {"pid": me.pid, "create_time": me.create_time() - 3600}}
    stack_status.state_path(layout).write_text(json.dumps(stale))
    assert stack_status.status_text(layout)[1] == 1
    assert stack_status.down(layout) == ("no stack running: nothing to stop", 0)


def test_a_clean_stop_is_told_from_a_crash(tmp_path: Path) -> None:
    layout = Layout(home=tmp_path)
    layout.run_dir.mkdir(parents=True)
    gone = {"pid": 2**22 + 7, "create_time": 1.0, "dataset": "tiny"}
    child = {"pid": 2**22 + 8, "create_time": 1.0, "log": "/x/logs/gateway.log"}
    for stopped, words in (({"stopped_at": "2026-12-05T07:00:00+00:00"}, "stopped cleanly"),
                           ({}, "without a clean stop")):  # fmt: skip
        state = {"cascade_up": {**gone, **stopped}, "gateway": child}
        stack_status.state_path(layout).write_text(json.dumps(state))
        text, code = stack_status.status_text(layout)
        assert code == 1 and words in text and "its logs: /x/logs" in text, text


def test_no_state_file(tmp_path: Path) -> None:
    text, code = stack_status.status_text(Layout(home=tmp_path))
    assert code == 1 and "cascade up" in text


def test_down_stops_what_a_killed_cascade_up_left_running(tmp_path: Path) -> None:
    # cascade up SIGKILLed: its pid is gone, a child still runs (own process group).
    port = free_port()
    child = subprocess.Popen([sys.executable, "-c", STAND_IN, str(port)])
    try:
        layout = Layout(home=tmp_path)
        layout.run_dir.mkdir(parents=True)
        gone = {"pid": 2**22 + 7, "create_time": 1.0}  # no such process
        entry = {"pid": child.pid, "create_time": psutil.Process(child.pid).create_time()}
        state = {"gateway": {**entry, "ready_url": "", "log": ""}, "cascade_up": gone}
        stack_status.state_path(layout).write_text(json.dumps(state))
        text, code = stack_status.down(layout, timeout_s=20)
        assert code == 0 and "gateway" in text, text
        assert child.wait(timeout=10) in (0, -signal.SIGTERM)  # stopped by SIGTERM
    finally:
        child.kill()
        child.wait(timeout=10)
