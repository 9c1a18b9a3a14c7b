"""Drill D8: the OTLP trace collector black-holed; the gateway's latency and memory stay flat.

The black hole (proxy: accept, read, never answer) sits between two baselines with a healthy
collector, before and after, pooled: a p99 drifts by about 10% over a minute on a shared
machine, as much as the allowance, and a baseline on both sides cancels a drift. Between the
hole and the second baseline the exporter recovers (its stuck request times out, it reconnects
and sends the backlog); that recovery is reported but belongs to neither window.
"""

from __future__ import annotations

import os

from cascade.drills import analysis as a
from cascade.drills.analysis import Check, DrillResult
from cascade.drills.fault_modes import BlackHole, Pass
from cascade.drills.observe import GC_PAUSE_COUNT, GC_PAUSE_SUM, RssSampler, Series, sum_between
from cascade.drills.target import DrillTarget
from cascade.drills.timeline import Plan, Run, common_figures, non_2xx_check

RSS_GROWTH_MIB = 16.0


def recovery_s() -> float:
    """Time for the exporter to give up on its black-holed request (OTLP timeout) and resend."""
    raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TIMEOUT", "10"
    )
    try:
        timeout = float(raw)
    except ValueError:
        timeout = 10.0
    return timeout + 3.0


async def d8_otlp_blackhole(target: DrillTarget, plan: Plan) -> DrillResult:
    """D8: baseline, black hole, recovery, baseline; p99 of the hole vs the pooled baselines."""
    proxy = target.proxies["otlp"]
    r = DrillResult("D8", "OTLP collector black-holed")
    # One metrics poll a second: the 10 Hz scrape other drills need would be part of what D8
    # measures (it renders the registry on the gateway's loop in every phase).
    async with Run(target, rate=plan.otlp_rate, seed=8, poll_s=1.0) as run:
        rss = RssSampler(pid=target.gateway_pid, t0=run.t0).start()
        try:
            # Each window opens just after a metrics snapshot and closes just before the next, so
            # the snapshots' cost weighs on all alike; the warm-up is in none.
            await run.sleep(plan.warmup_s)
            await run.snapshot("start")
            t_base = run.mark("baseline")
            await run.sleep(plan.otlp_base_s)
            await run.snapshot("blackhole")
            t_hole = run.mark("blackhole")
            await run.act(lambda: proxy.set_mode(BlackHole()))
            await run.sleep(plan.otlp_s)
            await run.snapshot("heal")
            t_heal = run.mark("heal")
            await run.act(lambda: proxy.set_mode(Pass()))
            await run.sleep(recovery_s())
            await run.snapshot("after")
            t_after = run.mark("after")
            await run.sleep(plan.otlp_base_s)
            t_end = run.mark("end")
            await run.snapshot("end")
        finally:
            await run.act(lambda: proxy.set_mode(Pass()))
            await rss.stop()
    before = a.window(run.samples, t_base, t_hole)
    after = a.window(run.samples, t_after, t_end)
    base, fault = before + after, a.window(run.samples, t_hole, t_heal)
    base_p99, fault_p99 = a.p99_ms(base), a.p99_ms(fault)
    growth = _rss_growth_mib(rss.samples, t_hole, t_heal)
    r.checks = [
        a.leq(
            "p99 black-holed vs baseline (+10%)",
            fault_p99,
            (base_p99 or 0.0) * 1.10,
            unit="ms",
            timing=True,
        ),
        Check(
            "gateway RSS growth in the hole",
            "n/a" if growth is None else f"{growth:+.1f} MiB",
            f"<= {RSS_GROWTH_MIB:g} MiB (flat)",
            None if growth is None else growth <= RSS_GROWTH_MIB,
        ),
        non_2xx_check(a.window(run.samples, 0.0), plan),
    ]
    r.figures.update(
        baseline_before_p99_ms=a.p99_ms(before),
        baseline_after_p99_ms=a.p99_ms(after),
        recovery_p99_ms=a.p99_ms(a.window(run.samples, t_heal, t_after)),
        baseline_p99_stderr_ms=a.p99_stderr_ms(base),
        fault_p99_stderr_ms=a.p99_stderr_ms(fault),
    )
    r.figures.update(_gc_figures(run.snapshots))
    common_figures(r, run, base, fault)
    return r


def _rss_growth_mib(samples: list[tuple[float, int]], start: float, end: float) -> float | None:
    """Largest resident memory in ``[start, end)`` minus the last reading before ``start``."""
    before = [b for t, b in samples if t < start]
    during = [b for t, b in samples if start <= t < end]
    return (max(during) - before[-1]) / 2**20 if before and during else None


def _gc_figures(snaps: dict[str, dict[str, Series]]) -> dict[str, float | int]:
    """The gateway's GC pause time and full collections per phase (``gc_watch`` metrics)."""
    out: dict[str, float | int] = {}
    for phase, (first, last) in {
        "before": ("start", "blackhole"),
        "hole": ("blackhole", "heal"),
        "after": ("after", "end"),
    }.items():
        a0, a1 = snaps.get(first), snaps.get(last)
        if not a0 or not a1:
            continue
        pause = sum_between(a0, a1, GC_PAUSE_SUM)
        full = sum_between(a0, a1, GC_PAUSE_COUNT, generation="2")
        out[f"gc_pause_ms_{phase}"] = round(pause * 1000, 1)
        out[f"gen2_collections_{phase}"] = int(full)
    return out
