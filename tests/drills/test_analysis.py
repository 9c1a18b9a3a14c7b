"""Pass-criteria figures on synthetic samples, Prometheus parsing, traffic and shapes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cascade.drills import analysis as a
from cascade.drills.load import CLIENT_ERROR, NOT_SENT, Sample, Traffic, auth_headers
from cascade.drills.observe import (
    DRILL_FAMILIES,
    bucket_delta,
    buckets,
    buckets_between,
    histogram_quantile,
    metric_sum,
    parse_metrics,
    poll_from,
    quantile_bucket,
    sum_between,
)
from cascade.drills.target import GatewayFacts

METRICS = """\
# HELP gateway_breaker_state Breaker state
# TYPE gateway_breaker_state gauge
gateway_breaker_state{breaker="primary"} 2.0
gateway_breaker_transitions_total{breaker="primary",from_state="closed",to_state="open"} 3.0
gateway_breaker_transitions_total{breaker="primary",from_state="half-open",to_state="open"} 1.0
gateway_breaker_transitions_total{breaker="primary",from_state="open",to_state="half-open"} 2.0
gateway_upstream_seconds_count{outcome="ok",tier="two_tower"} 90.0
gateway_upstream_seconds_count{outcome="timeout",tier="two_tower"} 10.0
gateway_upstream_seconds_count{outcome="ok",tier="als"} 7.0
gateway_feature_read_seconds_bucket{le="0.01"} 90.0
gateway_feature_read_seconds_bucket{le="0.02"} 95.0
gateway_feature_read_seconds_bucket{le="0.03"} 100.0
gateway_feature_read_seconds_bucket{le="+Inf"} 100.0
"""


def test_parse_metrics_and_poll() -> None:
    m = parse_metrics(METRICS)
    assert metric_sum(m, "gateway_breaker_transitions_total", to_state="open") == 4.0
    poll = poll_from(m, 1.5)
    assert (poll.breaker, poll.opens, poll.half_opens, poll.primary_calls) == (2, 4.0, 2.0, 100.0)
    b = buckets(m, "gateway_feature_read_seconds_bucket")
    assert b[-1] == (math.inf, 100.0)
    assert histogram_quantile(0.5, b) == pytest.approx(0.01 * 50 / 90)
    assert histogram_quantile(0.99, b) == pytest.approx(0.02 + 0.01 * 4 / 5)
    assert quantile_bucket(0.99, b) == 0.03
    before = [(0.01, 50.0), (0.02, 50.0), (0.03, 50.0), (math.inf, 50.0)]
    assert bucket_delta(b, before)[0] == (0.01, 40.0)
    assert histogram_quantile(0.5, []) is None


def test_p99_stderr_shrinks_with_more_samples() -> None:
    few = [_s(i / 10, ms=1 + (i * 37) % 100) for i in range(200)]
    many = [_s(i / 10, ms=1 + (i * 37) % 100) for i in range(20_000)]
    small, large = a.p99_stderr_ms(many), a.p99_stderr_ms(few)
    assert small is not None and large is not None and small < large
    assert a.p99_stderr_ms(few[:1]) is None


def test_changes_between_two_readings() -> None:
    before = parse_metrics(METRICS)
    after = parse_metrics(
        METRICS.replace('tier="two_tower"} 90.0', 'tier="two_tower"} 95.0').replace(
            'gateway_feature_read_seconds_bucket{le="+Inf"} 100.0',
            'gateway_feature_read_seconds_bucket{le="+Inf"} 104.0',
        )
    )
    assert sum_between(before, after, "gateway_upstream_seconds_count", tier="two_tower") == 5.0
    assert sum_between(before, after, "gateway_upstream_seconds_count", tier="als") == 0.0
    delta = buckets_between(before, after, "gateway_feature_read_seconds_bucket")
    assert delta == [(0.01, 0.0), (0.02, 0.0), (0.03, 0.0), (math.inf, 4.0)]


def test_parse_metrics_keeps_only_the_asked_families() -> None:
    m = parse_metrics(METRICS, ("gateway_breaker_",))
    assert set(m) == {"gateway_breaker_state", "gateway_breaker_transitions_total"}
    assert set(parse_metrics(METRICS, DRILL_FAMILIES)) == set(parse_metrics(METRICS))


def _s(
    t: float, tier: str = "two_tower", reason: str = "", status: int = 200, ms: float = 10
) -> Sample:
    return Sample(t, ms / 1000, status, tier, reason)


def test_windows_percentiles_and_counts() -> None:
    samples = [_s(i / 10, ms=i) for i in range(100)] + [Sample(5.0, 0, NOT_SENT)]
    assert len(a.window(samples, 1.0, 2.0)) == 10
    assert a.not_sent(samples) == 1
    assert a.p99_ms(a.window(samples, 0)) == pytest.approx(98.0)
    bad = [_s(0, status=503), Sample(0, 5, CLIENT_ERROR, reason="ReadTimeout"), _s(0)]
    assert a.non_2xx(bad) == 2 and a.client_error_kinds(bad) == {"ReadTimeout": 1}
    assert a.percentile([], 99) is None


def test_recovery_time_ignores_cold_start_and_needs_95_percent() -> None:
    # primary down until t=13, then back; unknown users always popular/cold_start
    samples = []
    for i in range(200):
        t = 10 + i * 0.05
        tier = "two_tower" if t >= 13 else "als"
        samples.append(_s(t, tier, "" if tier == "two_tower" else "breaker_open"))
        samples.append(_s(t, "popular", "cold_start"))
    got = a.recovery_time(samples, since=10.0)
    assert got == pytest.approx(4.0)  # the window [13, 14) ends 4 s after 10
    assert (
        a.recovery_time([_s(10 + i * 0.1, "als", "error") for i in range(50)], since=10.0) is None
    )
    stale = frozenset({"features_unavailable"})
    mixed = [_s(10 + i * 0.01, "two_tower") for i in range(200)] + [
        _s(10.5, "als", "features_unavailable")
    ]
    assert a.recovery_time(mixed, since=10.0, reasons_not_allowed=stale) == pytest.approx(2.0)


def test_latency_recovery_and_checks() -> None:
    samples = [_s(t / 10, ms=300 if t < 20 else 20) for t in range(60)]
    assert a.latency_recovery_time(samples, since=0.0, target_ms=50) == pytest.approx(3.0)
    check = a.leq("p99", 80.0, 250.0, unit="ms", timing=True)
    assert check.ok and check.timing and check.value == "80.0 ms"
    assert a.leq("open after", None, 1.0, unit="s").ok is None
    r = a.DrillResult("D0", "x", [check, a.Check("c", "1", "0", False)])
    assert (
        not r.passed
        and not r.behaviour_passed
        and r.failed_checks(include_timing=False)[0].name == "c"
    )


def test_traffic_mix() -> None:
    traffic = Traffic(users=list(range(100)), seed=3)
    reqs = [traffic.request() for _ in range(4000)]
    posts = [r for r in reqs if r[0] == "POST"]
    assert 0.15 < len(posts) / len(reqs) < 0.25
    assert all(len(body["exclude"]) == 3 for _, _, body in posts)
    users = [traffic.user() for _ in range(4000)]
    unknown = sum(u >= 10**12 for u in users) / len(users)
    assert 0.03 < unknown < 0.07
    known = [u for u in users if u < 10**12]
    assert known.count(0) > known.count(50) * 5  # Zipf: rank 1 far above rank 51
    assert {int(p.rsplit("k=", 1)[1]) for m, p, _ in reqs if m == "GET"} == {10, 20, 50}
    with pytest.raises(ValueError):
        Traffic(users=[])


def test_auth_header_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASCADE_API_KEY", raising=False)
    assert auth_headers() == {}
    monkeypatch.setenv("CASCADE_API_KEY", "k1")
    assert auth_headers() == {"Authorization": "Bearer k1"}


def test_gateway_facts_from_env() -> None:
    facts = GatewayFacts.from_env({"GATEWAY_BREAKER_WAIT_S": "2", "GATEWAY_DEADLINE_MS": "300"})
    assert facts.breaker_wait_s == 2.0 and facts.deadline_ms == 300.0 and facts.half_open_calls == 2


# locust monkey-patches the stdlib with gevent on import: never in the pytest process.
LOCUST_CHECKS = r"""
import os, sys, numpy as np
from pathlib import Path
tmp = Path(sys.argv[1])
from loadtests import locustfile, shapes

ids = np.array([5, 3, 2**40], dtype=np.int64)
np.save(tmp / "user_ids.npy", ids)
assert locustfile.read_npy_int64(tmp / "user_ids.npy") == [5, 3, 2**40]
np.save(tmp / "floats.npy", ids.astype(np.float64))
try:
    locustfile.read_npy_int64(tmp / "floats.npy")
    raise SystemExit("float array accepted")
except ValueError:
    pass
(tmp / "users.txt").write_text("7\n9\nheader\n11,4\n")
assert locustfile.read_users(tmp / "users.txt") == [7, 9, 11]
pop = locustfile.Population([1, 2, 3], zipf_s=1.1, unknown_share=0.0, seed=0)
assert {pop.user() for _ in range(200)} == {1, 2, 3}

class R:
    def __init__(self, status, tier):
        self.status_code = status
        self.headers = {"X-Served-By": tier} if tier else {}

assert locustfile.tier_name("/x", R(200, "als")) == "/x [als]"
assert locustfile.tier_name("/x", R(503, None)) == "/x [error]"
assert not hasattr(locustfile, "CascadeShape")  # no CASCADE_LOAD_SHAPE: Locust's -u/-t apply

os.environ.update(CASCADE_USERS="10", CASCADE_DURATION_S="40", CASCADE_SPIKE_AT_S="10", CASCADE_SPIKE_HOLD_S="10")
for name in ("steady", "ramp", "spike"):
    os.environ["CASCADE_LOAD_SHAPE"] = name
    shape = shapes.from_env()()
    clock = {"t": 0.0}
    shape.get_run_time = lambda: clock["t"]
    ticks = {}
    for t in (0.5, 5, 10.5, 15, 25, 39, 41):
        clock["t"] = t
        ticks[t] = shape.tick()
    assert ticks[41] is None, name
    if name == "steady":
        assert ticks[0.5][0] == ticks[39][0] == 10
    elif name == "ramp":
        assert ticks[0.5][0] < ticks[15][0] <= ticks[25][0] == 10, ticks
    else:
        assert ticks[5][0] == 10 and ticks[10.5][0] == ticks[15][0] == 100 and ticks[25][0] == 10
        assert ticks[10.5][1] >= 90  # the 10x arrives within one second
os.environ["CASCADE_LOAD_SHAPE"] = "zigzag"
try:
    shapes.from_env()
    raise SystemExit("unknown shape accepted")
except ValueError:
    pass
print("ok")
"""


def test_locustfile_helpers_and_shapes(tmp_path: Path) -> None:
    """Run in a child process: importing locust patches the stdlib with gevent."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    result = subprocess.run(
        [sys.executable, "-c", LOCUST_CHECKS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_run_drills_reports_a_missing_proxy_and_refuses_unknown_names() -> None:
    import asyncio

    from cascade.drills.drills import Plan, run_drills
    from cascade.drills.target import DrillTarget

    target = DrillTarget(url="http://127.0.0.1:9", gateway_pid=0, users=[1], procs={},
                         restore=lambda name: None, heal=lambda: None)  # fmt: skip
    [result] = asyncio.run(run_drills(target, ["D3"], plan=Plan.ci(), heal=False))
    assert not result.passed and result.checks[0].value == "missing"
    with pytest.raises(ValueError, match="unknown drill"):
        asyncio.run(run_drills(target, ["D99"], plan=Plan.ci(), heal=False))


def test_d8_rss_growth_and_recovery_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from cascade.drills.otlp_drill import _rss_growth_mib, recovery_s

    mib = 2**20
    samples = [(0.0, 100 * mib), (1.0, 101 * mib), (2.0, 104 * mib), (3.0, 120 * mib)]
    assert _rss_growth_mib(samples, 1.5, 2.5) == 3.0  # 104 - 101; the 120 after the hole is out
    assert _rss_growth_mib(samples, 5.0, 6.0) is None
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "4")
    assert recovery_s() == 7.0
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
    assert recovery_s() == 13.0
