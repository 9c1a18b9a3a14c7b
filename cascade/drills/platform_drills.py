"""Drills D6-D7: the platform around the models fails (Redis, a traffic spike); D8 is ``otlp_drill``.

Each drill runs under open-loop load with a baseline from the same run; see ``drills.py``.
"""

from __future__ import annotations

from cascade.drills import analysis as a
from cascade.drills.analysis import Check, DrillResult
from cascade.drills.load import HealthProbe
from cascade.drills.observe import (
    FEATURE_BUCKET,
    LOOP_LAG_CANDIDATES,
    UPSTREAM_COUNT,
    Series,
    buckets_between,
    histogram_quantile,
    quantile_bucket,
    sum_between,
)
from cascade.drills.target import DrillTarget
from cascade.drills.timeline import Plan, Run, base_window, common_figures, non_2xx_check


def _loop_lag(
    before: dict[str, Series],
    after: dict[str, Series],
    probe: HealthProbe,
    start: float,
    end: float,
) -> tuple[float | None, str]:
    """p99 event-loop lag (ms): the gateway's own metric when it exports one, else the probe."""
    for name in LOOP_LAG_CANDIDATES:
        if name + "_bucket" in after:
            value = histogram_quantile(0.99, buckets_between(before, after, name + "_bucket"))
            return (None if value is None else value * 1000), f"gateway metric {name}"
    lat = [lag for t, lag in probe.samples if start <= t < end]
    value = a.percentile(lat, 99)
    return (None if value is None else value * 1000), "no gateway metric: /healthz probe latency"


async def d6_redis_down(target: DrillTarget, plan: Plan) -> DrillResult:
    """D6: Redis killed (then back), then frozen (then back)."""
    redis = target.procs["redis"]
    r = DrillResult("D6", "Redis killed, then frozen")
    async with Run(target, rate=plan.rate, seed=6) as run:
        probe = HealthProbe(url=target.url, t0=run.t0).start()
        try:
            await run.sleep(plan.baseline_s)
            await run.snapshot("fault")
            t_kill = run.mark("kill")
            await run.act(redis.kill)
            await run.sleep(plan.redis_fault_s)
            t_restart = run.mark("restart")
            await run.act(lambda: target.restore("redis"))
            t_back1 = run.mark("back1")
            limit = plan.recovery_limit(5.0)
            stale = frozenset({"features_unavailable"})
            await run.observe_recovery(
                since=t_back1,
                at_least_s=plan.redis_fault_s,
                limit_s=limit,
                reasons_not_allowed=stale,
            )
            t_stop = run.mark("stop")
            await run.act(redis.pause)
            await run.sleep(plan.redis_fault_s)
            t_back2 = run.mark("back2")
            await run.act(redis.resume)
            await run.snapshot("back")
            await run.observe_recovery(
                since=t_back2,
                at_least_s=max(plan.after_s, 5.5),
                limit_s=limit,
                reasons_not_allowed=stale,
            )
        finally:
            await probe.stop()
    everything = a.window(run.samples, 0.0)
    base = base_window(run, t_kill)
    fault = a.window(run.samples, t_kill, t_restart) + a.window(run.samples, t_stop, t_back2)
    reads = buckets_between(run.snapshots["fault"], run.snapshots["back"], FEATURE_BUCKET)
    read_p99 = histogram_quantile(0.99, reads)
    read_bound = quantile_bucket(0.99, reads)
    timeout_ms = target.facts.feature_timeout_ms
    lag_ms, lag_source = _loop_lag(
        run.snapshots["fault"], run.snapshots["back"], probe, t_kill, t_back2
    )
    rec1 = a.recovery_time(
        run.samples, since=t_back1, horizon_s=t_stop - t_back1, reasons_not_allowed=stale
    )
    rec2 = a.recovery_time(
        run.samples, since=t_back2, horizon_s=run.now(), reasons_not_allowed=stale
    )
    degraded = sum(s.reason == "features_unavailable" for s in fault)
    r.checks = [
        non_2xx_check(everything, plan),
        Check(
            "answers without features during the faults",
            f"{degraded}/{len(fault)}",
            "> 0",
            degraded > 0,
        ),
        # The histogram's buckets around the timeout are 20 and 30 ms: a read that gives up at
        # the 20 ms timeout lands in the (20, 30] bucket, so the bound is the next bucket edge.
        Check(
            "feature read p99 (gives up at the timeout)",
            f"{a.fmt_ms(None if read_p99 is None else read_p99 * 1000)} (bucket <= {a.fmt_ms(None if read_bound is None else read_bound * 1000)})",
            f"<= {timeout_ms:g} ms timeout (+ one bucket, 30 ms)",
            None if read_bound is None else read_bound * 1000 <= max(timeout_ms, 30.0),
            timing=True,
        ),
        a.leq(f"event-loop lag p99 ({lag_source})", lag_ms, 50.0, unit="ms", timing=True),
        a.leq("full recovery after Redis restarted", rec1, limit, unit="s"),
        a.leq("full recovery after SIGCONT", rec2, limit, unit="s"),
    ]
    r.figures.update(restore_s=t_back1 - t_restart, feature_reads=reads[-1][1] if reads else 0)
    common_figures(r, run, base, fault)
    return r


async def d7_spike(target: DrillTarget, plan: Plan) -> DrillResult:
    """D7: a spike to ``spike_factor`` x the base rate for ``spike_s``."""
    r = DrillResult("D7", f"spike to {plan.spike_factor:g}x for {plan.spike_s:g} s")
    # More requests in flight than the gateway's own limit (GATEWAY_MAX_IN_FLIGHT, 64), so a
    # gateway that sheds gets the chance to.
    # Metrics once a second: D7 judges latencies, and each poll renders the registry on the
    # loop that the spike saturates.
    async with Run(target, rate=plan.spike_rate, seed=7, max_in_flight=1024, poll_s=1.0) as run:
        await run.sleep(plan.baseline_s)
        await run.snapshot("spike")
        t_up = run.mark("spike")
        run.gen.rate = plan.spike_rate * plan.spike_factor
        await run.sleep(plan.spike_s)
        t_down = run.mark("down")
        run.gen.rate = plan.spike_rate
        await run.snapshot("down")
        await run.sleep(max(plan.after_s, 10.5))
    base, spike = base_window(run, t_up), a.window(run.samples, t_up, t_down)
    allowed = {200, 429, 503}
    bad = sum(s.status not in allowed for s in a.window(run.samples, 0.0))
    shed = sum(s.status in (429, 503) for s in spike)
    accepted = [s for s in spike if s.status == 200]
    base_p99 = a.p99_ms(base)
    back = (
        a.latency_recovery_time(
            a.window(run.samples, t_down), since=t_down, target_ms=base_p99 * 1.2 + 5
        )
        if base_p99 is not None
        else None
    )
    achieved = len(spike) / max(t_down - t_up, 1e-9)
    r.checks = [
        a.leq("responses other than 200/429/503", bad, 0, unit="count"),
        Check(
            "shed (429/503) during the spike",
            a.fmt_share(shed / len(spike) if spike else None),
            "<= 30%",
            bool(spike) and shed / len(spike) <= 0.30,
        ),
        a.leq(
            "p99 of accepted during the spike", a.p99_ms(accepted), 500.0, unit="ms", timing=True
        ),
        a.leq("back to baseline p99 (+20%) after", back, 10.0, unit="s", timing=True),
    ]
    r.figures.update(offered_rps=plan.spike_rate * plan.spike_factor, sent_rps=round(achieved, 1))
    r.figures.update(
        _spike_internals(run.snapshots.get("spike", {}), run.snapshots.get("down", {}))
    )
    common_figures(r, run, base, spike)
    return r


def _spike_internals(before: dict[str, Series], after: dict[str, Series]) -> dict[str, float]:
    """The gateway's own p99s during the spike: loop lag, feature reads, each tier's upstream."""
    out: dict[str, float] = {}
    series = {
        "loop_lag": ("gateway_event_loop_lag_seconds_bucket", {}),
        "feature_read": (FEATURE_BUCKET, {}),
        "two_tower_call": ("gateway_upstream_seconds_bucket", {"tier": "two_tower"}),
        "als_call": ("gateway_upstream_seconds_bucket", {"tier": "als"}),
    }
    for name, (metric, labels) in series.items():
        value = histogram_quantile(0.99, buckets_between(before, after, metric, **labels))
        if value is not None:
            out[f"gateway_{name}_p99_ms"] = round(value * 1000, 1)
    for outcome in ("ok", "timeout", "error"):
        out[f"gateway_als_calls_{outcome}"] = sum_between(
            before, after, UPSTREAM_COUNT, tier="als", outcome=outcome
        )
    return out
