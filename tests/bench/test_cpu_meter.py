"""CPU ms per request per process, the baseline ratio and the best-row choice of bench-serve."""

from __future__ import annotations

import math
import os
import time

import pytest

from cascade.bench import cpu_meter
from cascade.bench.closed_loop import BenchRow
from cascade.bench.gateway import (
    best_row,
    format_baseline,
    format_table,
    headline_cpu,
    throughput_ratio,
)


def row(target: str, c: int, rps: float, p99: float, errors: int = 0, **cpu: float) -> BenchRow:
    return BenchRow(target, c, int(rps * 5), errors, rps, p99 / 3, p99, cpu_ms_per_req=cpu)


def test_cpu_ms_per_request_divides_the_window_by_requests() -> None:
    before = {"gateway": 10.0, "mf": 2.0, "triton": 5.0}
    after = {"gateway": 10.9, "mf": 2.0, "triton": math.nan}  # triton gone meanwhile
    assert cpu_meter.cpu_ms_per_request(before, after, 1_000) == {"gateway": 0.9, "mf": 0.0}
    assert cpu_meter.cpu_ms_per_request(before, after, 0) == {}
    # a restarted process (counter going back) never reads negative
    assert cpu_meter.cpu_ms_per_request({"gateway": 5.0}, {"gateway": 1.0}, 10) == {"gateway": 0.0}


def test_meter_reads_this_process() -> None:
    meter = cpu_meter.CpuMeter({"me": os.getpid()})
    meter.start()
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    measured = meter.finish(row("x", 1, 10.0, 1.0))  # 50 requests
    assert measured.cpu_ms_per_req["me"] == pytest.approx(1.0, abs=0.5)  # >= 50 ms / 50
    assert cpu_meter.CpuMeter({}).finish(measured) is measured
    assert math.isnan(cpu_meter.cpu_seconds(2**22 + 12345))  # no such pid


def test_self_is_this_process_without_its_children() -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        # The child burns CPU; SELF must not count it. Wait for the child's CPU, not for wall
        # time: on a saturated machine 0.3 s of wall gave it under 0.1 s of CPU.
        deadline = time.monotonic() + 60
        while cpu_meter.cpu_seconds(child.pid) < 0.2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cpu_meter.cpu_seconds(cpu_meter.SELF) == pytest.approx(time.process_time(), abs=0.05)
        assert cpu_meter.cpu_seconds(os.getpid()) > time.process_time() + 0.1
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/venv/bin/python", "-m", "gateway"], "gateway"),
        (["/venv/bin/python", "-m", "fallback_mf"], "mf"),
        (["/x/pytriton/tritonserver/bin/tritonserver", "--model-repository=m"], "triton"),
        (["/venv/bin/python", "-m", "cascade.stack"], None),
        ([], None),
    ],
)
def test_classify_the_stacks_children(argv: list[str], expected: str | None) -> None:
    assert cpu_meter.classify(argv) == expected


def test_best_row_and_the_ratio() -> None:
    gateway = [
        row("gateway (primary path)", 1, 300.0, 8.0, gateway=1.2),
        row("gateway (primary path)", 8, 700.0, 40.0, gateway=0.8),
        row("gateway (primary path)", 16, 900.0, 70.0, gateway=0.7),  # p99 over the target
        row("gateway (primary path)", 4, 800.0, 30.0, errors=3),  # errors: not counted
    ]
    bare = [row("bare FastAPI app", 1, 800.0, 3.0), row("bare FastAPI app", 8, 1400.0, 12.0)]
    best, bare_best = best_row(gateway, 50.0), best_row(bare, 50.0)
    assert best is not None and best.concurrency == 8
    assert bare_best is not None and bare_best.rps == 1400.0
    assert throughput_ratio(best, bare_best) == 0.5
    assert throughput_ratio(None, bare_best) is None
    assert throughput_ratio(best, row("b", 1, 0.0, 1.0)) is None
    assert headline_cpu(gateway, best, "gateway") == 0.8
    assert headline_cpu(gateway, None, "gateway") == 0.7  # none meets p99: the fastest row
    assert headline_cpu([], None, "gateway") is None
    assert best_row(gateway, 5.0) is None


def test_best_row_prefers_wrk_rows() -> None:
    rows = [
        row("gateway (primary path)", 1, 900.0, 5.0),
        row("gateway (primary path), wrk", 1, 600.0, 5.0),
    ]
    chosen = best_row(rows, 50.0)
    assert chosen is not None and chosen.rps == 600.0


def test_tables_show_cpu_columns_and_the_ratio() -> None:
    from dataclasses import asdict

    result: dict[str, object] = {
        "rows": [
            asdict(row("gateway (primary path)", 8, 700.0, 40.0, gateway=0.8, mf=0.01, triton=0.5)),
            asdict(row("bare FastAPI app", 8, 1400.0, 12.0, bare_app=0.3)),
        ],
        "summary": {"gateway_vs_bare": 0.5},
    }
    text = format_table(result)
    assert "| gateway/app CPU ms/req | MF CPU ms/req | Triton CPU ms/req |" in text
    assert "| Triton CPU ms/req | driver CPU ms/req |" in text
    assert "| 0.80 | 0.01 | 0.50 | - |" in text and "| 0.30 | - | - |" in text
    summary = {
        "best_rps_at_p99_target": 700.0,
        "best_concurrency": 8,
        "gateway_cpu_ms_per_request": 0.8,
        "bare_best_rps_at_p99_target": 1400.0,
        "bare_best_concurrency": 8,
        "bare_cpu_ms_per_request": 0.3,
        "gateway_vs_bare": 0.5,
    }
    baseline = format_baseline(summary)
    assert "| gateway / bare | 50% | - | - |" in baseline
    assert "| bare FastAPI app, same JSON | 1,400 | 8 | 0.30 |" in baseline


def test_throttle_delta_and_quota_notes() -> None:
    before = {"periods": 10.0, "throttled_periods": 2.0, "throttled_s": 0.1}
    after = {"periods": 110.0, "throttled_periods": 42.0, "throttled_s": 1.35}
    delta = cpu_meter.throttle_delta(before, after)
    assert delta == {"periods": 100.0, "throttled_periods": 40.0, "throttled_s": 1.25}
    notes = cpu_meter.quota_notes(
        {"cpu_quota": {"cpus": 0.5, "throttled": {"gateway": delta}}},
        {"cpu_quota": 0.5, "throttled": delta},
    )
    assert len(notes) == 2
    assert "CPU quota 0.5 CPU" in notes[0] and "gateway 1.25 s (40 of 100 periods)" in notes[0]
    assert "MF service" in notes[1]
    assert cpu_meter.quota_notes(None, {"cpu_quota": None}) == []


def test_check_quota_says_why() -> None:
    assert cpu_meter.check_quota("--gateway-cpu", None) is None
    problem = cpu_meter.check_quota("--gateway-cpu", 0.0)
    assert problem is not None and "--gateway-cpu 0 cannot be applied" in problem


def test_idle_cpu_is_ms_per_second() -> None:
    import asyncio

    idle = asyncio.run(cpu_meter.idle_cpu({"me": os.getpid(), "gone": 2**22 + 12345}, 0.2))
    assert set(idle) == {"me"} and 0 <= idle["me"] < 1000
