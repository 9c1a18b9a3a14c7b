"""The analysis on synthetic metric streams: clearly worse, equal, clearly better, too few."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gateway.rollout.analysis import (
    AnalysisConfig,
    ArmCounts,
    CheckStatus,
    Decision,
    analyze,
    quantile_bound,
)

BOUNDS = (0.005, 0.010, 0.020, 0.030, 0.050, 0.075, 0.100, 0.150, 0.250)


def arm(
    rng: np.random.Generator,
    n: int,
    *,
    err: float = 0.002,
    fallback: float = 0.002,
    latency_ms: float = 12.0,
    ctr: float | None = 0.10,
) -> ArmCounts:
    """n requests drawn from the given rates; latency lognormal around ``latency_ms``."""
    errors = int(rng.binomial(n, err))
    lat = rng.lognormal(np.log(latency_ms / 1000), 0.35, n)
    counts = np.histogram(lat, bins=[0, *BOUNDS, np.inf])[0]
    impressions = n * 20 if ctr is not None else None
    clicks = int(rng.binomial(impressions, ctr)) if impressions and ctr is not None else None
    return ArmCounts(
        requests=n,
        calls=n,
        errors=errors,
        fallbacks=int(rng.binomial(n, fallback)) + errors,
        latency=tuple(int(c) for c in counts),
        impressions=impressions,
        clicks=clicks,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_equal_arms_pass_at_step_end_and_continue_before(rng: np.random.Generator) -> None:
    decisions = [
        analyze(arm(rng, 2000), arm(rng, 40_000), bounds=BOUNDS, step_done=True).decision
        for _ in range(50)
    ]
    # no false rollback over 50 independent equal looks; most pass, a few lean and hold
    assert Decision.FAIL not in decisions and decisions.count(Decision.PASS) >= 35
    v = analyze(arm(rng, 2000), arm(rng, 40_000), bounds=BOUNDS, step_done=False)
    assert v.decision is Decision.CONTINUE and "time" in v.reason


def test_clearly_better_passes(rng: np.random.Generator) -> None:
    cand = arm(rng, 3000, err=0.0, latency_ms=8, ctr=0.15)
    v = analyze(cand, arm(rng, 40_000), bounds=BOUNDS, step_done=True)
    assert v.decision is Decision.PASS


def test_garbage_candidate_fails_fast_before_step_end(rng: np.random.Generator) -> None:
    cand = arm(rng, 30, err=1.0, fallback=0.0, ctr=None)
    v = analyze(cand, arm(rng, 3000, ctr=None), bounds=BOUNDS, step_done=False)
    assert v.decision is Decision.FAIL and "errors worse" in v.reason


def test_slow_candidate_fails_on_latency(rng: np.random.Generator) -> None:
    cand = arm(rng, 100, latency_ms=160, ctr=None)
    v = analyze(cand, arm(rng, 5000, ctr=None), bounds=BOUNDS, step_done=False)
    assert v.decision is Decision.FAIL and "latency_p99 worse" in v.reason


def test_worse_ctr_fails(rng: np.random.Generator) -> None:
    cand = arm(rng, 500, ctr=0.05)
    v = analyze(cand, arm(rng, 10_000, ctr=0.10), bounds=BOUNDS, step_done=False)
    assert v.decision is Decision.FAIL and "ctr worse" in v.reason


def test_too_few_samples_neither_pass_nor_fail(rng: np.random.Generator) -> None:
    # a small canary with one error: noise, not evidence
    cand = ArmCounts(requests=15, calls=15, errors=1, latency=(0, 15, 0, 0, 0, 0, 0, 0, 0, 0))
    v = analyze(cand, arm(rng, 3000, ctr=None), bounds=BOUNDS, step_done=True)
    assert v.decision is Decision.CONTINUE and "too few" in v.reason
    statuses = {c.metric: c.status for c in v.checks}
    assert statuses["errors"] is CheckStatus.TOO_FEW
    assert statuses["ctr"] is CheckStatus.NOT_MEASURED


def test_small_canary_with_slightly_more_errors_not_rolled_back(rng: np.random.Generator) -> None:
    cand = ArmCounts(requests=60, calls=60, errors=2, latency=(0, 60, *([0] * 8)))
    v = analyze(cand, arm(rng, 6000, ctr=None), bounds=BOUNDS, step_done=False)
    assert v.decision is Decision.CONTINUE


def test_require_ctr_holds_a_step_without_events(rng: np.random.Generator) -> None:
    cfg = AnalysisConfig(require_ctr=True)
    v = analyze(arm(rng, 2000, ctr=None), arm(rng, 9000, ctr=None), bounds=BOUNDS,
                step_done=True, config=cfg)  # fmt: skip
    assert v.decision is Decision.CONTINUE and "no feedback events" in v.reason


def test_quantile_bound() -> None:
    assert quantile_bound([0, 99, 1], [0.01, 0.02], 0.99) == 0.02
    assert quantile_bound([0, 98, 2], [0.01, 0.02], 0.99) == float("inf")
    assert quantile_bound([], [0.01], 0.99) == 0.0


def test_worse_but_not_yet_significant_holds_the_step(rng: np.random.Generator) -> None:
    # CTR 27% lower on 1,500 impressions: z 2.7, not proven worse, not allowed to pass either
    cand = ArmCounts(requests=500, calls=500, latency=(0, 500, *([0] * 8)), impressions=1500,
                     clicks=110)  # fmt: skip
    stable = ArmCounts(requests=3000, calls=3000, latency=(0, 2980, 20, *([0] * 7)),
                       impressions=6000, clicks=600)  # fmt: skip
    v = analyze(cand, stable, bounds=BOUNDS, step_done=True)
    assert v.decision is Decision.CONTINUE and "leaning worse" in v.reason
    assert {c.metric: c.status for c in v.checks}["ctr"] is CheckStatus.UNCLEAR


def test_ctr_decides_nothing_before_its_minimum_sample(rng: np.random.Generator) -> None:
    # 0 clicks in 80 impressions (8 requests) against 7%: clustered impressions, not evidence
    cand = ArmCounts(requests=8, calls=8, latency=(0, 8, *([0] * 8)), impressions=80, clicks=0)
    v = analyze(cand, arm(rng, 3000, ctr=0.07), bounds=BOUNDS, step_done=False)
    assert v.decision is Decision.CONTINUE
    assert {c.metric: c.status for c in v.checks}["ctr"] is CheckStatus.TOO_FEW


def test_zero_impressions_on_both_arms_is_not_measured_and_does_not_hold(
    rng: np.random.Generator,
) -> None:
    # `cascade up` points the gateway at the consumer's counters; an app that sends no events
    # leaves them at 0, which must read as "no feedback", not as "too few impressions" forever.
    cand, stable = arm(rng, 2000, ctr=None), arm(rng, 9000, ctr=None)
    cand = replace(cand, impressions=0, clicks=0)
    stable = replace(stable, impressions=0, clicks=0)
    v = analyze(cand, stable, bounds=BOUNDS, step_done=True, config=AnalysisConfig())
    assert v.decision is Decision.PASS, v.reason
    held = analyze(cand, stable, bounds=BOUNDS, step_done=True,
                   config=AnalysisConfig(require_ctr=True))  # fmt: skip
    assert held.decision is Decision.CONTINUE
