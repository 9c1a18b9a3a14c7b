"""Drills D1-D5 and D9: the model tiers fail (Triton killed, frozen, slowed, erroring, answering
garbage; Triton and MF down).

Each drill runs under open-loop load with a baseline from the same run; see ``drills.py``.
"""

from __future__ import annotations

import math

from cascade.drills import analysis as a
from cascade.drills.analysis import Check, DrillResult
from cascade.drills.fault_modes import Delay, Errors, Garbage, Pass
from cascade.drills.target import DrillTarget
from cascade.drills.timeline import Plan, Run, base_window, common_figures, non_2xx_check


async def d1_triton_kill(target: DrillTarget, plan: Plan) -> DrillResult:
    """D1: Triton SIGKILL mid-run."""
    r = DrillResult("D1", "Triton SIGKILL mid-run")
    async with Run(target, rate=plan.rate, seed=1) as run:
        await run.sleep(plan.baseline_s)
        t_kill = run.mark("kill")
        await run.act(target.procs["triton"].kill)
        await run.sleep(plan.fault_s)
        t_end = run.mark("end")
    base, fault = base_window(run, t_kill), a.window(run.samples, t_kill, t_end)
    t_open = run.breaker_open_at(t_kill)
    while_open = a.window(run.samples, t_open, t_end) if t_open is not None else []
    primary_while_open = sum(s.tier == a.PRIMARY for s in while_open)
    r.checks = [
        non_2xx_check(a.window(run.samples, 0.0), plan),
        a.leq(
            "breaker open after kill", None if t_open is None else t_open - t_kill, 1.0, unit="s"
        ),
        Check(
            "served by a fallback while open",
            f"{len(while_open) - primary_while_open}/{len(while_open)}",
            "all",
            bool(while_open) and primary_while_open == 0,
        ),
        a.leq("p99 after kill", a.p99_ms(fault), 250.0, unit="ms", timing=True),
    ]
    common_figures(r, run, base, fault)
    return r


async def d2_triton_freeze(target: DrillTarget, plan: Plan) -> DrillResult:
    """D2: Triton SIGSTOP for ``freeze_s``, then SIGCONT."""
    facts = target.facts
    r = DrillResult("D2", f"Triton SIGSTOP {plan.freeze_s:g} s, then SIGCONT")
    async with Run(target, rate=plan.rate, seed=2) as run:
        await run.sleep(plan.baseline_s)
        t_stop = run.mark("stop")
        await run.act(target.procs["triton"].pause)
        await run.sleep(plan.freeze_s)
        t_cont = run.mark("cont")
        await run.act(target.procs["triton"].resume)
        limit = plan.recovery_limit(10.0)
        await run.observe_recovery(since=t_cont, at_least_s=max(plan.after_s, 10.5), limit_s=limit)
        t_end = run.mark("end")
    base, fault = base_window(run, t_stop), a.window(run.samples, t_stop, t_cont)
    everything = a.window(run.samples, 0.0)
    t_open = run.breaker_open_at(t_stop)
    limit_ms = facts.deadline_ms + 50
    slowest = max((s.latency for s in everything), default=0.0) * 1000
    # Primary calls made while the breaker was open or half-open: only the half-open trials.
    calls = trials = None
    if t_open is not None:
        settle = t_open + facts.primary_timeout_ms / 1000 + 0.3  # calls started before it opened
        first, last = run.poller.at(settle), run.poller.before(t_cont)
        if first is not None and last is not None and last.t > first.t:
            calls = last.primary_calls - first.primary_calls
            trials = last.half_opens - first.half_opens
    periods = max(1.0, trials or 0.0)
    per_period = None if calls is None else calls / periods
    recovery = a.recovery_time(run.samples, since=t_cont, horizon_s=t_end - t_cont)
    r.checks = [
        non_2xx_check(everything, plan),
        a.leq("slowest response", slowest, limit_ms, unit="ms", timing=True),
        a.leq(
            "breaker open after SIGSTOP", None if t_open is None else t_open - t_stop, 2.0, unit="s"
        ),
        a.leq(
            "Triton calls per wait period while open",
            per_period,
            float(facts.half_open_calls),
            unit="count",
        ),
        a.leq("back to >= 95% primary after SIGCONT", recovery, limit, unit="s"),
    ]
    r.figures.update(primary_calls_while_open=calls, half_open_periods=trials)
    common_figures(r, run, base, fault)
    return r


async def d3_triton_slow(target: DrillTarget, plan: Plan) -> DrillResult:
    """D3: Triton slowed by 150 ms (proxy delay)."""
    proxy = target.proxies["triton"]
    wait = target.facts.breaker_wait_s
    r = DrillResult("D3", "Triton slowed by 150 ms")
    async with Run(target, rate=plan.rate, seed=3) as run:
        await run.sleep(plan.baseline_s)
        t_slow = run.mark("slow")
        await run.act(lambda: proxy.set_mode(Delay(150)))
        await run.sleep(plan.slow_s)
        t_fast = run.mark("fast")
        await run.act(lambda: proxy.set_mode(Pass()))
        await run.sleep(max(plan.after_s, 10.5))
        t_end = run.mark("end")
    base, fault = base_window(run, t_slow), a.window(run.samples, t_slow, t_fast)
    t_open = run.breaker_open_at(t_slow)
    opens = run.opens_between(t_slow, t_fast + 0.5)
    max_opens = math.floor(plan.slow_s / wait) + 1 if wait > 0 else math.inf
    recovery = a.recovery_time(run.samples, since=t_fast, horizon_s=t_end - t_fast)
    r.checks = [
        a.leq(
            "breaker open (slow calls) after delay",
            None if t_open is None else t_open - t_slow,
            5.0,
            unit="s",
        ),
        a.leq("p99 while slowed", a.p99_ms(fault), 250.0, unit="ms", timing=True),
        a.leq("open transitions (no flapping)", opens, float(max_opens), unit="count"),
        a.leq("back to >= 95% primary after", recovery, 10.0, unit="s"),
        non_2xx_check(a.window(run.samples, 0.0), plan),
    ]
    common_figures(r, run, base, fault)
    return r


async def d4_triton_errors(target: DrillTarget, plan: Plan) -> DrillResult:
    """D4: 30% random Triton errors (proxy)."""
    proxy = target.proxies["triton"]
    action = "grpc"  # the gateway talks gRPC to Triton: one call fails, the connection lives
    r = DrillResult("D4", f"30% random Triton errors ({action})")
    injected_before = int(str(proxy.snapshot()["injected_errors"]))
    async with Run(target, rate=plan.rate, seed=4) as run:
        await run.sleep(plan.baseline_s)
        t_err = run.mark("errors")
        await run.act(lambda: proxy.set_mode(Errors(0.3, action)))  # type: ignore[arg-type]
        await run.sleep(plan.fault_s)
        t_ok = run.mark("ok")
        await run.act(lambda: proxy.set_mode(Pass()))
        await run.sleep(1.0)
    base, fault = base_window(run, t_err), a.window(run.samples, t_err, t_ok)
    # Requests that reached the primary: served by it, or fell back on its error. Timeouts and
    # feature-read failures (a loaded machine) are reported in the figures, not judged here.
    pool = [s for s in a.eligible(fault) if s.tier == a.PRIMARY or s.reason == "error"]
    fallback = sum(s.tier != a.PRIMARY for s in pool) / len(pool) if pool else None
    others = a.eligible(fault)
    any_fallback = sum(s.tier != a.PRIMARY for s in others) / len(others) if others else None
    opens = run.opens_between(t_err, t_ok + 0.5)
    r.checks = [
        a.leq("breaker opens", opens, 0, unit="count"),
        non_2xx_check(a.window(run.samples, 0.0), plan),
        Check(
            "served by the fallback on a Triton error",
            a.fmt_share(fallback),
            "30% +- 10 pts",
            None if fallback is None else abs(fallback - 0.30) <= 0.10,
        ),
    ]
    r.figures.update(
        injected_errors=int(str(proxy.snapshot()["injected_errors"])) - injected_before,
        fallback_any_reason=a.fmt_share(any_fallback),
    )
    common_figures(r, run, base, fault)
    return r


async def d5_all_models_down(target: DrillTarget, plan: Plan) -> DrillResult:
    """D5: Triton and the MF service both down (SIGKILL)."""
    r = DrillResult("D5", "Triton and MF both down")
    async with Run(target, rate=plan.rate, seed=5) as run:
        await run.sleep(plan.baseline_s)
        t_kill = run.mark("kill")
        await run.act(target.procs["triton"].kill)
        await run.act(target.procs["mf"].kill)
        t_down = run.mark("down")
        await run.sleep(plan.fault_s)
        t_end = run.mark("end")
    base, fault = base_window(run, t_kill), a.window(run.samples, t_down, t_end)
    popular = sum(s.status == 200 and s.tier == "popular" for s in fault)
    r.checks = [
        Check(
            "200 from popular",
            f"{popular}/{len(fault)}",
            "all",
            bool(fault) and popular == len(fault),
        ),
        non_2xx_check(a.window(run.samples, 0.0), plan),
        a.leq("p99 while down", a.p99_ms(fault), 50.0, unit="ms", timing=True),
    ]
    common_figures(r, run, base, fault)
    return r


async def d9_primary_garbage(target: DrillTarget, plan: Plan) -> DrillResult:
    """D9: the primary answers garbage (NaN scores, one id repeated) under load, then heals."""
    facts = target.facts
    proxy = target.proxies["triton"]
    r = DrillResult("D9", "Triton answers garbage (NaN scores, duplicate ids), then heals")
    garbled_before = int(str(proxy.snapshot()["garbled"]))
    async with Run(target, rate=plan.rate, seed=9) as run:
        await run.sleep(plan.baseline_s)
        t_bad = run.mark("garbage")
        await run.act(lambda: proxy.set_mode(Garbage()))
        await run.sleep(plan.fault_s)
        t_ok = run.mark("healthy")
        await run.act(lambda: proxy.set_mode(Pass()))
        limit = plan.recovery_limit(facts.breaker_wait_s + 5.0)
        await run.observe_recovery(
            since=t_ok, at_least_s=max(plan.after_s, facts.breaker_wait_s + 5.0), limit_s=limit
        )
        t_end = run.mark("end")
    base, fault = base_window(run, t_bad), a.window(run.samples, t_bad, t_ok)
    everything = a.window(run.samples, 0.0)
    broken = [s for s in everything if s.broken]
    t_open = run.breaker_open_at(t_bad)
    recovery = a.recovery_time(run.samples, since=t_ok, horizon_s=t_end - t_ok)
    r.checks = [
        non_2xx_check(everything, plan),
        a.leq("invalid answers served", len(broken), 0, unit="count"),
        a.leq(
            "breaker open after garbage (D1's limit)",
            None if t_open is None else t_open - t_bad,
            1.0,
            unit="s",
        ),
        a.leq("back to >= 95% primary after healing", recovery, limit, unit="s"),
    ]
    r.figures.update(
        garbled_answers=int(str(proxy.snapshot()["garbled"])) - garbled_before,
        broken_rules=",".join(sorted({s.broken for s in broken})) or "none",
    )
    common_figures(r, run, base, fault)
    return r
