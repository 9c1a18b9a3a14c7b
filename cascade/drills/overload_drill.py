"""D10: 2x overload for 30 s, then recovery. Does the gateway leave its degraded mode?

A gateway can have a metastable degraded mode: pushed into fallback by an overload, it stays
there at a load it handled before (on a slower machine the calm ``make loadtest`` sat at 94%
fallback, mostly ``features_unavailable``, from start to end). This drill pushes and watches.

1. **Capacity**: a closed loop (``CONCURRENCY`` clients, each sending its next request when the
   previous one is answered) for ``plan.capacity_s``; the capacity is the rate of good answers:
   200, within the gateway's deadline, and not degraded (served by the primary, or a
   ``cold_start``). Few clients, below the gateway's smallest in-flight limit (8): the loop
   keeps the gateway busy without queueing or shedding, so it measures what the gateway sustains
   at full quality on this machine, the load generator's share of the cores included (32
   clients were tried first: they drove the gateway into shedding and fallback, and then
   measured how fast it answers 503s). The overload is then
   ``plan.overload_factor`` (2) x that, unless ``plan.overload_rate`` names a rate (it is then
   taken as given, and the capacity is not measured). A measured one: never below 2x the base
   rate.
2. Quiet for ``SETTLE_S``, then open-loop load at ``plan.rate`` for ``plan.baseline_s`` (the
   baseline), the overload rate for ``plan.overload_s``, and ``plan.rate`` again for
   ``plan.overload_after_s``.

Pass (:func:`judge`): a healthy baseline (fallback share excluding cold_start at most
``BASELINE_FALLBACK``, 5%, and 503 share at most ``BASELINE_SHED``, 1%: recovering "to the
baseline" means nothing when the base rate already holds the gateway in its degraded mode, as
100 requests/s does on half a CPU); only 200/429/503 answers; after the overload ends, within
``RECOVERY_S`` (5 s, x ``plan.slack``): the fallback share excluding cold_start (per 1 s window,
sliding by 0.5 s) is back within ``FALLBACK_POINTS`` (2 points) of the baseline's, and the 503
share back to the baseline's (+``SHED_POINTS``, one point); and from then to the end the fallback
share stays within 2 points (a mode the gateway falls back into is the failure this drill is
for). The figures show both shares per second around the end of the overload.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import aiohttp

from cascade.drills import analysis as a
from cascade.drills import internals
from cascade.drills.analysis import Check, DrillResult
from cascade.drills.load import Sample, Traffic, auth_headers
from cascade.drills.observe import Series
from cascade.drills.target import DrillTarget
from cascade.drills.timeline import Plan, Run, common_figures

CONCURRENCY = 4  # below the gateway's smallest in-flight limit (8): busy, never queued or shed
SETTLE_S = 2.0
RECOVERY_S = 5.0
FALLBACK_POINTS = 0.02
SHED_POINTS = 0.01
BASELINE_FALLBACK = 0.05
BASELINE_SHED = 0.01
AROUND = range(-3, 8)  # seconds around the end of the overload printed per second
INTERNALS = ("event_loop_lag_p99_ms", "feature_read_p99_ms", "in_flight_limit_at_end")
INTERNAL_PREFIXES = ("shed_", "feature_read_errors_", "fallbacks_")


async def measure_capacity(
    target: DrillTarget, *, seconds: float, deadline_s: float, concurrency: int = CONCURRENCY
) -> dict[str, float]:
    """Closed-loop throughput: ``capacity_rps`` (good answers: 200 within ``deadline_s``, from
    the primary or a cold start), all 200s/s, all answers/s, and the primary's share meanwhile."""
    traffic = Traffic(users=target.users, seed=1010)
    answers: list[Sample] = []
    good = 0
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with aiohttp.ClientSession(
        base_url=target.url, headers=auth_headers(), timeout=timeout
    ) as session:
        started = time.monotonic()
        end = started + seconds

        async def client() -> None:
            nonlocal good
            while time.monotonic() < end:
                method, path, body = traffic.request()
                sent = time.monotonic()
                stamp = {"X-Request-Start": f"t={time.time():.6f}"}
                try:
                    async with session.request(method, path, json=body, headers=stamp) as r:
                        await r.read()
                        status, tier = r.status, r.headers.get("X-Served-By", "")
                        reason = r.headers.get("X-Fallback-Reason", "")
                except (aiohttp.ClientError, TimeoutError):
                    status, tier, reason = 0, "", ""
                latency = time.monotonic() - sent
                answers.append(Sample(sent - started, latency, status, tier, reason, method))
                fine = tier == a.PRIMARY or reason == "cold_start"
                good += status == 200 and latency <= deadline_s and fine

        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    primary = a.primary_share(answers)
    return {
        "capacity_rps": round(good / elapsed, 1),
        "calibration_200_rps": round(sum(s.status == 200 for s in answers) / elapsed, 1),
        "calibration_answers_rps": round(len(answers) / elapsed, 1),
        "calibration_primary_share": round(primary, 3) if primary is not None else -1.0,
    }


def per_second(
    samples: Sequence[Sample], t_end: float
) -> list[tuple[int, float | None, float | None]]:
    """``(second relative to t_end, fallback share, 503 share)`` for each second in ``AROUND``."""
    out = []
    for k in AROUND:
        chunk = a.window(samples, t_end + k, t_end + k + 1)
        out.append((k, a.fallback_share(chunk), a.shed_share(chunk)))
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def judge(
    samples: Sequence[Sample], *, base_start: float, t_up: float, t_down: float, plan: Plan
) -> tuple[list[Check], dict[str, float | int | str | None], list[str]]:
    """D10's checks, figures and notes from its samples and marks (pure)."""
    base = a.window(samples, base_start, t_up)
    over = a.window(samples, t_up, t_down)
    after = a.window(samples, t_down)
    everything = a.window(samples, 0.0)
    end = max((s.t for s in everything), default=t_down)
    base_fb, base_shed = a.fallback_share(base), a.shed_share(base)
    limit = plan.recovery_limit(RECOVERY_S)
    fb_at_most = (base_fb or 0.0) + FALLBACK_POINTS
    shed_at_most = (base_shed or 0.0) + SHED_POINTS
    horizon = max(end - t_down, 0.0)
    fb_back = a.share_recovery_time(
        after, since=t_down, share_of=a.fallback_share, at_most=fb_at_most, horizon_s=horizon
    )
    shed_back = a.share_recovery_time(
        after, since=t_down, share_of=a.shed_share, at_most=shed_at_most, horizon_s=horizon
    )
    settled = a.window(samples, t_down + limit)
    settled_fb = a.fallback_share(settled)
    bad = sum(s.status not in (200, 429, 503) for s in everything)
    checks = [
        Check(
            "baseline healthy (fallback excl. cold_start / 503 share)",
            f"{a.fmt_share(base_fb)} / {a.fmt_share(base_shed)}",
            f"<= {BASELINE_FALLBACK:.0%} / {BASELINE_SHED:.0%}",
            None
            if base_fb is None or base_shed is None
            else base_fb <= BASELINE_FALLBACK and base_shed <= BASELINE_SHED,
        ),
        a.leq("responses other than 200/429/503", bad, 0, unit="count"),
        Check(
            "fallback share (excl. cold_start) back within 2 points of the baseline",
            a.fmt_s(fb_back),
            f"<= {limit:g} s (baseline {a.fmt_share(base_fb)})",
            fb_back is not None and fb_back <= limit,
        ),
        Check(
            "503 share back to the baseline",
            a.fmt_s(shed_back),
            f"<= {limit:g} s (baseline {a.fmt_share(base_shed)})",
            shed_back is not None and shed_back <= limit,
        ),
        Check(
            f"fallback share from +{limit:g} s to the end (stays recovered)",
            a.fmt_share(settled_fb),
            f"<= {a.fmt_share(fb_at_most)}",
            None if settled_fb is None else settled_fb <= fb_at_most + 1e-9,
        ),
    ]
    reasons: dict[str, int] = {}
    for s in over:
        if s.status == 200 and s.tier != a.PRIMARY and s.reason != "cold_start":
            reasons[s.reason or "?"] = reasons.get(s.reason or "?", 0) + 1
    figures: dict[str, float | int | str | None] = {
        "baseline_fallback_share": a.fmt_share(base_fb),
        "baseline_503_share": a.fmt_share(base_shed),
        "overload_fallback_share": a.fmt_share(a.fallback_share(over)),
        "overload_503_share": a.fmt_share(a.shed_share(over)),
        "overload_sent_rps": round(len(over) / max(t_down - t_up, 1e-9), 1),
        "overload_fallback_reasons": str(dict(sorted(reasons.items(), key=lambda kv: -kv[1]))),
        "after_fallback_share": a.fmt_share(settled_fb),
        "fallback_back_s": a.fmt_s(fb_back),
        "shed_back_s": a.fmt_s(shed_back),
    }
    rows = per_second(samples, t_down)
    notes = [
        "per second around the end of the overload (t=0), fallback excl. cold_start / 503: "
        + " | ".join(f"{k:+d}s {_pct(fb)}/{_pct(shed)}" for k, fb, shed in rows)
    ]
    return checks, figures, notes


def _internals(
    before: dict[str, Series], after: dict[str, Series], prefix: str
) -> dict[str, float]:
    found = internals.figures(before, after)
    return {
        f"{prefix}{k}": v
        for k, v in found.items()
        if k in INTERNALS or k.startswith(INTERNAL_PREFIXES)
    }


async def d10_overload(target: DrillTarget, plan: Plan) -> DrillResult:
    """D10: 2x the gateway's capacity for 30 s, then back to the base rate."""
    r = DrillResult(
        "D10", f"{plan.overload_factor:g}x overload for {plan.overload_s:g} s, then recovery"
    )
    if plan.overload_rate is not None:
        rate = plan.overload_rate
        r.figures["overload_rate_source"] = "Plan.overload_rate"
    else:
        deadline_s = target.facts.deadline_ms / 1000
        calibration = await measure_capacity(target, seconds=plan.capacity_s, deadline_s=deadline_s)
        r.figures.update(calibration)
        # A gateway too slow to sustain even the base rate still gets twice that.
        rate = max(plan.overload_factor * calibration["capacity_rps"], 2 * plan.rate)
        r.figures["overload_rate_source"] = f"{plan.overload_factor:g} x capacity"
    r.figures["overload_rate"] = round(rate, 1)
    await asyncio.sleep(SETTLE_S)
    async with Run(target, rate=plan.rate, seed=10, max_in_flight=1024, poll_s=1.0) as run:
        await run.sleep(plan.baseline_s)
        before = await internals.ascrape(target.url)
        t_up = run.mark("overload")
        run.gen.rate = rate
        await run.sleep(plan.overload_s)
        t_down = run.mark("down")
        run.gen.rate = plan.rate
        middle = await internals.ascrape(target.url)
        await run.sleep(plan.overload_after_s)
        run.mark("end")
        after = await internals.ascrape(target.url)
    base_start = min(target.facts.breaker_wait_s, plan.warmup_s)
    r.checks, figures, r.notes = judge(
        run.samples, base_start=base_start, t_up=t_up, t_down=t_down, plan=plan
    )
    r.figures.update(figures)
    r.figures.update(_internals(before, middle, "over_"))
    r.figures.update(_internals(middle, after, "after_"))
    common_figures(
        r, run, a.window(run.samples, base_start, t_up), a.window(run.samples, t_up, t_down)
    )
    return r
