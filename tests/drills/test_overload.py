"""D10's arithmetic on synthetic samples (no processes), and the slow-node figures."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cascade.drills import analysis as a
from cascade.drills.load import Sample
from cascade.drills.overload_drill import judge, per_second
from cascade.drills.slow_node import CpuQuotaError, describe, find_gateway_pid, throttle_figures
from cascade.drills.timeline import Plan
from cascade.runtime.paths import Layout

RATE = 100  # samples per second
T_UP, T_DOWN, END = 10.0, 40.0, 55.0


def _answer(i: int, degraded: float, shed: float) -> Sample:
    """The i-th request: a ``shed`` share 503, every 20th of the rest a cold start, and a
    ``degraded`` share served by ALS for lack of features (deterministic by index)."""
    t = i / RATE
    slot = (i % 100) / 100
    if slot < shed:
        return Sample(t, 0.001, 503, "", "overloaded")
    if i % 20 == 0:
        return Sample(t, 0.01, 200, "popular", "cold_start")
    if slot < shed + degraded:
        return Sample(t, 0.02, 200, "als", "features_unavailable")
    return Sample(t, 0.01, 200, "two_tower", "")


def _samples(after: Callable[[float], tuple[float, float]]) -> list[Sample]:
    """Healthy baseline, overload (50% degraded, 30% shed), then ``after(t)`` -> (degraded, shed)."""
    out = []
    for i in range(int(END * RATE)):
        t = i / RATE
        if t < T_UP:
            degraded, shed = 0.0, 0.0
        elif t < T_DOWN:
            degraded, shed = 0.5, 0.3
        else:
            degraded, shed = after(t)
        out.append(_answer(i, degraded, shed))
    return out


NAMES = {
    "baseline": "baseline healthy (fallback excl. cold_start / 503 share)",
    "statuses": "responses other than 200/429/503",
    "fallback": "fallback share (excl. cold_start) back within 2 points of the baseline",
    "shed": "503 share back to the baseline",
    "stays": "fallback share from +5 s to the end (stays recovered)",
}


def _judge(samples: list[Sample]) -> tuple[dict[str, bool | None], dict[str, object], list[str]]:
    """D10's verdict per check (short names, see ``NAMES``), figures and notes."""
    checks, figures, notes = judge(samples, base_start=1.0, t_up=T_UP, t_down=T_DOWN, plan=Plan())
    assert [c.name for c in checks] == list(NAMES.values())
    return dict(zip(NAMES, (c.ok for c in checks), strict=True)), figures, notes


def test_shares_exclude_cold_start_and_count_503s() -> None:
    chunk = [_answer(i, 0.5, 0.3) for i in range(100)]
    eligible = [s for s in chunk if s.status == 200 and s.reason != "cold_start"]
    assert a.fallback_share(chunk) == pytest.approx(
        sum(s.tier != "two_tower" for s in eligible) / len(eligible)
    )
    assert a.shed_share(chunk) == pytest.approx(sum(s.status == 503 for s in chunk) / 100)
    assert a.fallback_share([]) is None and a.shed_share([]) is None


def test_share_recovery_time_finds_the_first_good_window() -> None:
    samples = _samples(lambda t: (0.5, 0.3) if t < T_DOWN + 2.0 else (0.0, 0.0))
    after = a.window(samples, T_DOWN)
    fb = a.share_recovery_time(after, since=T_DOWN, share_of=a.fallback_share, at_most=0.02)
    shed = a.share_recovery_time(after, since=T_DOWN, share_of=a.shed_share, at_most=0.01)
    # [42, 43) is the first window without fallbacks; [41.5, 42.5) already has no 503s (the
    # last half second of each overloaded second sheds nothing).
    assert fb == pytest.approx(3.0) and shed == pytest.approx(2.5)
    never = a.share_recovery_time(after, since=T_DOWN, share_of=a.fallback_share, at_most=-1.0)
    assert never is None


def test_d10_passes_when_the_gateway_recovers_within_5s() -> None:
    checks, figures, notes = _judge(
        _samples(lambda t: (0.5, 0.3) if t < T_DOWN + 2.0 else (0.0, 0.0))
    )
    assert all(checks.values()), checks
    assert figures["baseline_fallback_share"] == "0.0%" and figures["baseline_503_share"] == "0.0%"
    assert figures["fallback_back_s"] == "3.00 s" and figures["shed_back_s"] == "2.50 s"
    assert figures["overload_sent_rps"] == pytest.approx(100.0)
    assert "features_unavailable" in str(figures["overload_fallback_reasons"])
    assert "-1s 72%/30%" in notes[0] and "+3s 0%/0%" in notes[0]


def test_d10_fails_a_metastable_degraded_mode() -> None:
    # The load is back to the base rate, but the gateway stays at 60% fallback (no sheds).
    checks, figures, _ = _judge(_samples(lambda t: (0.6, 0.0)))
    assert checks["fallback"] is False
    assert checks["shed"] is True
    assert checks["stays"] is False
    assert figures["fallback_back_s"] == "never"


def test_d10_fails_a_late_recovery_and_an_error_status() -> None:
    late = _samples(lambda t: (0.5, 0.3) if t < T_DOWN + 7.0 else (0.0, 0.0))
    checks, figures, _ = _judge(late)
    assert figures["fallback_back_s"] == "8.00 s"
    assert checks["fallback"] is False
    assert checks["stays"] is False  # +5..+7 still degraded
    broken = [*_samples(lambda t: (0.0, 0.0)), Sample(45.0, 0.1, 500), Sample(46.0, 5.0, 0)]
    assert _judge(broken)[0]["statuses"] is False


def test_per_second_around_the_end() -> None:
    rows = per_second(_samples(lambda t: (0.0, 0.0)), T_DOWN)
    assert [k for k, _, _ in rows] == list(range(-3, 8))
    assert rows[2][2] == pytest.approx(0.3) and rows[3] == (0, 0.0, 0.0)


def test_throttle_figures_and_their_line() -> None:
    before = {"wall": 0.0, "cpu_s": 1.0, "periods": 100, "throttled_periods": 10,
              "throttled_s": 0.5}  # fmt: skip
    after = {"wall": 60.0, "cpu_s": 31.0, "periods": 700, "throttled_periods": 430,
             "throttled_s": 12.5}  # fmt: skip
    f = throttle_figures(before, after, cpus=0.5)
    assert f["gateway_cpu_cores"] == 0.5 and f["periods"] == 600
    assert f["throttled_share"] == 0.7 and f["throttled_s"] == 12.0
    assert describe(f) == (
        "gateway CPU quota 0.5 CPU: used 0.50 cores over 60 s; throttled in 420/600 periods"
        " (70%), 12.0 s throttled"
    )


def test_find_gateway_pid_says_when_there_is_none(tmp_path: object) -> None:
    from cascade.runtime.procs import free_port

    with pytest.raises(CpuQuotaError, match="cannot find the gateway's pid"):
        find_gateway_pid(Layout(home=tmp_path), free_port())  # type: ignore[arg-type]


def test_d10_fails_when_the_base_rate_already_degrades_the_gateway() -> None:
    # 40% fallback at the base rate: "back to the baseline" would pass; the baseline check fails.
    samples = [
        _answer(i, 0.4 if i / RATE < T_UP or i / RATE >= T_DOWN else 0.6, 0.0)
        for i in range(int(END * RATE))
    ]
    checks, figures, _ = _judge(samples)
    assert checks["baseline"] is False and checks["fallback"] and checks["stays"]
    assert figures["baseline_fallback_share"] != "0.0%"
