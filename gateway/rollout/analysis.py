"""Judge a canary step: candidate against stable over the same step's traffic.

Four checks, each on counts the replicas flushed to Redis for this step (``ArmCounts``):

- **errors**: share of the arm's primary calls that failed, timed out or answered an invalid
  answer (``gateway.tiers.validation`` decides "invalid");
- **fallbacks**: share of the arm's requests served by another tier (ALS, popular);
- **latency**: share of the arm's primary calls slower than ``L`` = stable's p99 plus
  ``latency_margin_s`` (rounded up to a histogram bound). Equal tails put about 1% of both arms
  above ``L``; a candidate 150 ms slower puts all of its calls there. Testing that share, rather
  than two p99 estimates, turns the tail into a proportion with a known variance;
- **ctr**: clicks / impressions from the feedback events (lower is worse, relative margin).

**Method: a one-sided two-proportion z-test per check at every look, at a strict z** (default
3.5, one-sided alpha 2.3e-4 per look). "Worse" means the candidate's rate exceeds stable's by more
than the margin (H0: ``p_c - p_s <= margin``) with ``z > z_fail``. Looks repeat every analysis
interval (10 s: about 30 per 5-minute step); by Bonferroni the chance that an equal candidate is
rolled back at some look of a step is below 30 x 4 x 2.3e-4 = 2.8%, and far lower in fact since
successive looks share most of their data. Rates use the Agresti-Caffo adjustment (one success
and one failure added to each arm), so zero counts have a finite variance and tiny samples are
shrunk towards 1/2, which makes a tiny canary hard to condemn on one error.

Why not an SPRT: it needs an alternative effect size per metric and assumes one observation at a
time from a known family; the fixed z with margins and minimum samples is simple to explain and
to audit from the figures each check reports. The cost: at a strict z, a subtle regression
(smaller than the margin) passes; the offline gate and the margins are there for that.

**Samples.** A step passes only when it has lasted its planned time *and* every check has its
minimum sample (``min_requests`` calls per arm; ``min_latency_requests`` for the tail, enough to
place stable's p99; ``min_impressions`` for CTR), with no check worse, and no check *unclear*:
leaning worse at ``z_hold`` (default 2.0, one-sided 2.3%) though short of ``z_fail`` (a CTR 20%
lower on a few hundred impressions). Such a step keeps running until the evidence settles
either way, so "not proven worse" on a thin sample never advances a candidate that looks worse;
an equal candidate leans at about one look in ten (four checks) and passes at a later one. It fails as soon as one
check is worse with at least ``min_fail_sample`` calls in the candidate arm (CTR: its full
``min_impressions``, since impressions are clustered by request and user): a garbage candidate
is rolled back after tens of requests, never waiting for the step to end. A step without enough
traffic neither passes nor fails: it stays (``continue``) until the traffic comes or an operator
decides (docs/runbook.md, "A rollout stalls").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Decision(StrEnum):
    CONTINUE = "continue"  # not enough evidence either way yet: keep the step running
    PASS = "pass"  # step time over, every sample reached, nothing worse: advance
    FAIL = "fail"  # a check is worse beyond doubt: roll back


class CheckStatus(StrEnum):
    OK = "ok"
    WORSE = "worse"
    TOO_FEW = "too_few"  # below the minimum sample: cannot pass yet
    UNCLEAR = "unclear"  # leaning worse (z_hold < z <= z_fail): cannot pass yet
    NOT_MEASURED = "not_measured"  # no data source (CTR without feedback events)


@dataclass(frozen=True)
class ArmCounts:
    """One arm's counts over one step. ``latency``: non-cumulative counts per bound of
    ``bounds`` plus one overflow count at the end. ``impressions``/``clicks``: None when no
    feedback events are available."""

    requests: int = 0  # requests routed to this arm's version (that reached the primary stage)
    calls: int = 0  # primary calls made for this arm
    errors: int = 0  # calls that failed or timed out
    invalid: int = 0  # calls whose answer broke a validation rule
    fallbacks: int = 0  # requests of this arm served by another tier
    latency: tuple[int, ...] = ()
    impressions: int | None = None
    clicks: int | None = None


@dataclass(frozen=True)
class AnalysisConfig:
    z_fail: float = 3.5
    z_hold: float = 2.0  # leaning worse beyond this holds a step (never passes it)
    min_requests: int = 200
    min_latency_requests: int = 400
    min_impressions: int = 1000
    min_fail_sample: int = 20
    error_margin: float = 0.005  # absolute: +0.5 points of error rate allowed
    fallback_margin: float = 0.01
    latency_margin_s: float = 0.010  # the candidate's tail may be this much slower
    latency_quantile: float = 0.99
    ctr_margin: float = 0.05  # relative: a CTR 5% lower than stable's is tolerated
    require_ctr: bool = False  # True: no CTR data means the step cannot pass


@dataclass(frozen=True)
class Check:
    metric: str
    status: CheckStatus
    candidate: float
    stable: float
    z: float
    n_candidate: int
    n_stable: int
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str
    checks: tuple[Check, ...] = field(default_factory=tuple)


def _adjusted(x: int, n: int) -> tuple[float, float]:
    """Agresti-Caffo: (rate, variance of the rate) with one success and one failure added."""
    p = (x + 1) / (n + 2)
    return p, p * (1 - p) / (n + 2)


def z_higher(x_c: int, n_c: int, x_s: int, n_s: int, margin: float) -> float:
    """z for H1: candidate rate > stable rate + margin (one-sided)."""
    pc, vc = _adjusted(x_c, n_c)
    ps, vs = _adjusted(x_s, n_s)
    return (pc - ps - margin) / math.sqrt(vc + vs)


def z_lower_relative(x_c: int, n_c: int, x_s: int, n_s: int, margin: float) -> float:
    """z for H1: candidate rate < (1 - margin) x stable rate (one-sided)."""
    pc, vc = _adjusted(x_c, n_c)
    ps, vs = _adjusted(x_s, n_s)
    factor = 1 - margin
    return (factor * ps - pc) / math.sqrt(vc + factor * factor * vs)


def quantile_bound(counts: Sequence[int], bounds: Sequence[float], q: float) -> float:
    """The smallest bound with at least ``q`` of the observations at or below it (inf if the
    overflow count holds the quantile; 0 with no observations)."""
    total = sum(counts)
    if total == 0:
        return 0.0
    need = q * total
    seen = 0
    for count, bound in zip(counts, [*bounds, math.inf], strict=False):
        seen += count
        if seen >= need:
            return bound
    return math.inf


def _above(counts: Sequence[int], bounds: Sequence[float], limit: float) -> int:
    """Observations in buckets whose upper bound exceeds ``limit`` (the overflow included)."""
    edges = [*bounds, math.inf]
    return sum(c for c, b in zip(counts, edges, strict=False) if b > limit)


def _proportion(
    metric: str,
    x_c: int,
    n_c: int,
    x_s: int,
    n_s: int,
    *,
    margin: float,
    min_n: int,
    cfg: AnalysisConfig,
) -> Check:
    z = z_higher(x_c, n_c, x_s, n_s, margin)
    rc, rs = x_c / n_c if n_c else 0.0, x_s / n_s if n_s else 0.0
    if n_c >= cfg.min_fail_sample and z > cfg.z_fail:
        status = CheckStatus.WORSE
    elif n_c < min_n or n_s < min_n:
        status = CheckStatus.TOO_FEW
    elif z > cfg.z_hold:
        status = CheckStatus.UNCLEAR
    else:
        status = CheckStatus.OK
    return Check(metric, status, rc, rs, z, n_c, n_s, f"{x_c}/{n_c} vs {x_s}/{n_s}")


def analyze(
    candidate: ArmCounts,
    stable: ArmCounts,
    *,
    bounds: Sequence[float],
    step_done: bool,
    config: AnalysisConfig | None = None,
) -> Verdict:
    """The verdict on one step so far (see the module docstring)."""
    cfg = config or AnalysisConfig()
    checks = [
        _proportion(
            "errors",
            candidate.errors + candidate.invalid,
            candidate.calls,
            stable.errors + stable.invalid,
            stable.calls,
            margin=cfg.error_margin,
            min_n=cfg.min_requests,
            cfg=cfg,
        ),
        _proportion(
            "fallbacks",
            candidate.fallbacks,
            candidate.requests,
            stable.fallbacks,
            stable.requests,
            margin=cfg.fallback_margin,
            min_n=cfg.min_requests,
            cfg=cfg,
        ),
        _latency(candidate, stable, bounds, cfg),
        _ctr(candidate, stable, cfg),
    ]
    worse = [c for c in checks if c.status is CheckStatus.WORSE]
    if worse:
        reason = "; ".join(
            f"{c.metric} worse: candidate {c.candidate:.4g} vs stable {c.stable:.4g} "
            f"(z={c.z:.1f} > {cfg.z_fail:g}; {c.detail})"
            for c in worse
        )
        return Verdict(Decision.FAIL, reason, tuple(checks))
    too_few = [c.metric for c in checks if c.status is CheckStatus.TOO_FEW]
    if cfg.require_ctr and any(
        c.metric == "ctr" and c.status is CheckStatus.NOT_MEASURED for c in checks
    ):
        too_few.append("ctr (no feedback events)")
    if too_few:
        return Verdict(Decision.CONTINUE, "too few samples: " + ", ".join(too_few), tuple(checks))
    unclear = [c for c in checks if c.status is CheckStatus.UNCLEAR]
    if unclear:
        reason = "; ".join(
            f"{c.metric} leaning worse, not yet significant: candidate "
            f"{c.candidate:.4g} vs stable {c.stable:.4g} (z={c.z:.1f})"
            for c in unclear
        )
        return Verdict(Decision.CONTINUE, reason, tuple(checks))
    if not step_done:
        return Verdict(Decision.CONTINUE, "step time not over", tuple(checks))
    return Verdict(Decision.PASS, "no check worse, every sample reached", tuple(checks))


def _latency(
    candidate: ArmCounts, stable: ArmCounts, bounds: Sequence[float], cfg: AnalysisConfig
) -> Check:
    n_c, n_s = sum(candidate.latency), sum(stable.latency)
    p_s = quantile_bound(stable.latency, bounds, cfg.latency_quantile)
    p_c = quantile_bound(candidate.latency, bounds, cfg.latency_quantile)
    if n_s < cfg.min_latency_requests:  # no stable tail to compare with yet
        return Check(
            "latency_p99", CheckStatus.TOO_FEW, p_c, p_s, 0.0, n_c, n_s, "stable tail unknown"
        )
    limit = p_s + cfg.latency_margin_s
    check = _proportion(
        "latency_p99",
        _above(candidate.latency, bounds, limit),
        n_c,
        _above(stable.latency, bounds, limit),
        n_s,
        margin=0.0,
        min_n=cfg.min_latency_requests,
        cfg=cfg,
    )
    detail = f"share slower than {limit * 1000:.0f} ms: {check.detail}"
    return Check(check.metric, check.status, p_c, p_s, check.z, n_c, n_s, detail)


def _ctr(candidate: ArmCounts, stable: ArmCounts, cfg: AnalysisConfig) -> Check:
    if None in (candidate.impressions, candidate.clicks, stable.impressions, stable.clicks):
        return Check("ctr", CheckStatus.NOT_MEASURED, 0.0, 0.0, 0.0, 0, 0, "no feedback events")
    i_c, c_c = int(candidate.impressions or 0), int(candidate.clicks or 0)
    i_s, c_s = int(stable.impressions or 0), int(stable.clicks or 0)
    if i_c == 0 and i_s == 0:  # counters exist but no app sends events: nothing to wait for
        return Check("ctr", CheckStatus.NOT_MEASURED, 0.0, 0.0, 0.0, 0, 0, "no feedback events")
    z = z_lower_relative(c_c, i_c, c_s, i_s, cfg.ctr_margin)
    # Impressions come k to a request and one user's taste to many requests: they are not
    # independent trials, so the binomial variance is too small on a few requests (D11: a good
    # candidate rolled back on 0 clicks in 80 impressions, 8 requests). CTR decides nothing,
    # not even a failure, before its full minimum sample.
    if i_c < cfg.min_impressions or i_s < cfg.min_impressions:
        status = CheckStatus.TOO_FEW
    elif z > cfg.z_fail:
        status = CheckStatus.WORSE
    elif z > cfg.z_hold:
        status = CheckStatus.UNCLEAR
    else:
        status = CheckStatus.OK
    ctr_c, ctr_s = c_c / i_c if i_c else 0.0, c_s / i_s if i_s else 0.0
    return Check("ctr", status, ctr_c, ctr_s, z, i_c, i_s, f"{c_c}/{i_c} vs {c_s}/{i_s} clicks")
