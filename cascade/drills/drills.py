"""The fault drills D1-D8 (issue 7), each under open-loop load, with a baseline from the same run.

Each drill: load starts; ``baseline_s`` of healthy traffic; the fault; observation; the fault
removed (when the drill says so); then figures and :class:`~cascade.drills.analysis.Check`s.
The caller heals the stack between drills. :class:`Plan` holds the durations; ``Plan.ci()`` is
the shortened form the CI test runs (same criteria code).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from cascade.drills import analysis as a
from cascade.drills.analysis import Check, DrillResult
from cascade.drills.load import HealthProbe, LoadGenerator, Sample, Traffic, auth_headers
from cascade.drills.observe import (
    FEATURE_BUCKET,
    LOOP_LAG_CANDIDATES,
    MetricsPoller,
    RssSampler,
    Series,
    bucket_delta,
    buckets,
    histogram_quantile,
    quantile_bucket,
)
from cascade.drills.proxy import BlackHole, Delay, Errors, Pass
from cascade.drills.target import DrillTarget

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """Durations (seconds) and rates (requests/s) of the drills."""

    rate: float = 50.0
    baseline_s: float = 8.0
    fault_s: float = 15.0  # D1, D4, D5
    freeze_s: float = 20.0  # D2: SIGSTOP length (the 20 s)
    slow_s: float = 20.0  # D3
    after_s: float = 12.0  # observation after a fault is removed
    redis_fault_s: float = 8.0  # D6, each of killed and frozen
    spike_rate: float = 30.0  # D7's base rate (the generator shares the 2 cores)
    spike_factor: float = 10.0
    spike_s: float = 30.0
    otlp_s: float = 20.0  # D8, baseline and black hole each
    warmup_s: float = 1.0  # left out of the baseline (connection setup)

    @classmethod
    def ci(cls) -> Plan:
        """Shortened for CI: D1, D2, D5 and D6 in about a minute together."""
        return cls(
            rate=40.0, baseline_s=3.0, fault_s=4.0, freeze_s=6.0, after_s=8.0, redis_fault_s=3.0
        )


class Run:
    """One drill's timeline: load, metrics poller, marks (seconds since ``t0``)."""

    def __init__(
        self, target: DrillTarget, *, rate: float, seed: int = 0, max_in_flight: int = 256
    ) -> None:
        self.target = target
        self.t0 = time.monotonic()
        self.gen = LoadGenerator(
            max_in_flight=max_in_flight,
            url=target.url,
            traffic=Traffic(users=target.users, seed=seed),
            t0=self.t0,
        )
        self.rate = rate
        self.poller = MetricsPoller(url=target.url, t0=self.t0, headers=auth_headers())
        self.marks: dict[str, float] = {}
        self.snapshots: dict[str, dict[str, Series]] = {}
        self.cpu: dict[str, float | None] = {"start": _cpu_seconds(target.gateway_pid)}
        self.marks["start"] = 0.0
        self._load: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Run:
        self.poller.start()
        self._load = asyncio.create_task(self.gen.run(rate=self.rate))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.gen.stop()
        if self._load is not None:
            await self._load
        await self.poller.stop()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, name: str) -> float:
        self.marks[name] = self.now()
        self.cpu[name] = _cpu_seconds(self.target.gateway_pid)
        return self.marks[name]

    def cpu_share(self, start: str, end: str) -> float | None:
        """The gateway's CPU use between two marks, as a share of one core."""
        a0, a1 = self.cpu.get(start), self.cpu.get(end)
        span = self.marks[end] - self.marks[start]
        return None if a0 is None or a1 is None or span <= 0 else (a1 - a0) / span

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def act(self, fn: Callable[[], Any]) -> None:
        """Run a blocking action (signal, restart) in a thread: the load keeps flowing."""
        await asyncio.to_thread(fn)

    async def snapshot(self, name: str) -> None:
        """A full metrics reading now (empty when the gateway does not answer within 5 s)."""
        try:
            async with httpx.AsyncClient(timeout=5.0, headers=auth_headers()) as client:
                self.snapshots[name] = await self.poller.fetch(client)
        except httpx.HTTPError as exc:
            logger.warning("metrics snapshot %s failed: %r", name, exc)
            self.snapshots[name] = {}

    @property
    def samples(self) -> list[Sample]:
        return self.gen.samples

    def breaker_open_at(self, since: float) -> float | None:
        """When the breaker was first seen open after ``since``: gauge or a breaker_open answer."""
        seen = [p.t for p in self.poller.polls if p.t >= since and p.breaker == 2]
        seen += [s.t for s in self.samples if s.t >= since and s.reason == "breaker_open"]
        return min(seen) if seen else None

    def opens_between(self, start: float, end: float) -> float | None:
        before, after = self.poller.before(start) or self.poller.at(start), self.poller.before(end)
        return None if before is None or after is None else after.opens - before.opens


def _cpu_seconds(pid: int) -> float | None:
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def _base(run: Run, end: float) -> list[Sample]:
    return a.window(run.samples, min(run.target.facts.breaker_wait_s, 1.0), end)


def _common(result: DrillResult, run: Run, base: list[Sample], fault: list[Sample]) -> None:
    result.samples, result.marks = run.samples, dict(run.marks)
    names = list(run.marks)
    for first, second in itertools.pairwise(names):
        share = run.cpu_share(first, second)
        if share is not None:
            result.figures[f"gateway_cpu_{first}_to_{second}"] = f"{share:.0%}"
    result.figures.update(
        requests=len(a.window(run.samples, 0.0)),
        not_sent=a.not_sent(run.samples),
        baseline_p99_ms=a.p99_ms(base),
        fault_p99_ms=a.p99_ms(fault),
        statuses=str(a.status_counts(a.window(run.samples, 0.0))),
    )
    errors = a.client_error_kinds(a.window(run.samples, 0.0))
    if errors:
        result.notes.append(f"client-side errors (no HTTP status): {errors}")
    if a.not_sent(run.samples):
        result.notes.append(
            f"the generator skipped {a.not_sent(run.samples)} sends (max in flight)"
        )


async def d1_triton_kill(target: DrillTarget, plan: Plan) -> DrillResult:
    """D1: Triton SIGKILL mid-run."""
    r = DrillResult("D1", "Triton SIGKILL mid-run")
    async with Run(target, rate=plan.rate, seed=1) as run:
        await run.sleep(plan.baseline_s)
        t_kill = run.mark("kill")
        await run.act(target.procs["triton"].kill)
        await run.sleep(plan.fault_s)
        t_end = run.mark("end")
    base, fault = _base(run, t_kill), a.window(run.samples, t_kill, t_end)
    t_open = run.breaker_open_at(t_kill)
    while_open = a.window(run.samples, t_open, t_end) if t_open is not None else []
    primary_while_open = sum(s.tier == a.PRIMARY for s in while_open)
    r.checks = [
        a.leq("non-2xx responses", a.non_2xx(a.window(run.samples, 0.0)), 0, unit="count"),
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
    _common(r, run, base, fault)
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
        await run.sleep(max(plan.after_s, 10.5))
        t_end = run.mark("end")
    base, fault = _base(run, t_stop), a.window(run.samples, t_stop, t_cont)
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
        a.leq("non-2xx responses", a.non_2xx(everything), 0, unit="count"),
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
        a.leq("back to >= 95% primary after SIGCONT", recovery, 10.0, unit="s"),
    ]
    r.figures.update(primary_calls_while_open=calls, half_open_periods=trials)
    _common(r, run, base, fault)
    return r


async def d3_triton_slow(target: DrillTarget, plan: Plan) -> DrillResult:
    """D3: Triton slowed by 150 ms (proxy delay)."""
    proxy = target.proxies["triton"]
    wait = target.facts.breaker_wait_s
    r = DrillResult("D3", "Triton slowed by 150 ms")
    async with Run(target, rate=plan.rate, seed=3) as run:
        await run.sleep(plan.baseline_s)
        t_slow = run.mark("slow")
        proxy.set_mode(Delay(150))
        await run.sleep(plan.slow_s)
        t_fast = run.mark("fast")
        proxy.set_mode(Pass())
        await run.sleep(max(plan.after_s, 10.5))
        t_end = run.mark("end")
    base, fault = _base(run, t_slow), a.window(run.samples, t_slow, t_fast)
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
        a.leq("non-2xx responses", a.non_2xx(a.window(run.samples, 0.0)), 0, unit="count"),
    ]
    _common(r, run, base, fault)
    return r


async def d4_triton_errors(target: DrillTarget, plan: Plan) -> DrillResult:
    """D4: 30% random Triton errors (proxy)."""
    proxy = target.proxies["triton"]
    action = "grpc" if target.facts.triton_protocol == "grpc" else "reset"
    r = DrillResult("D4", f"30% random Triton errors ({action})")
    injected_before = int(str(proxy.snapshot()["injected_errors"]))
    async with Run(target, rate=plan.rate, seed=4) as run:
        await run.sleep(plan.baseline_s)
        t_err = run.mark("errors")
        proxy.set_mode(Errors(0.3, action))  # type: ignore[arg-type]
        await run.sleep(plan.fault_s)
        t_ok = run.mark("ok")
        proxy.set_mode(Pass())
        await run.sleep(1.0)
    base, fault = _base(run, t_err), a.window(run.samples, t_err, t_ok)
    # Requests that reached the primary: served by it, or fell back on its error. Timeouts and
    # feature-read failures (a loaded machine) are reported in the figures, not judged here.
    pool = [s for s in a.eligible(fault) if s.tier == a.PRIMARY or s.reason == "error"]
    fallback = sum(s.tier != a.PRIMARY for s in pool) / len(pool) if pool else None
    others = a.eligible(fault)
    any_fallback = sum(s.tier != a.PRIMARY for s in others) / len(others) if others else None
    opens = run.opens_between(t_err, t_ok + 0.5)
    r.checks = [
        a.leq("breaker opens", opens, 0, unit="count"),
        a.leq("non-2xx responses", a.non_2xx(a.window(run.samples, 0.0)), 0, unit="count"),
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
    _common(r, run, base, fault)
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
    base, fault = _base(run, t_kill), a.window(run.samples, t_down, t_end)
    popular = sum(s.status == 200 and s.tier == "popular" for s in fault)
    r.checks = [
        Check(
            "200 from popular",
            f"{popular}/{len(fault)}",
            "all",
            bool(fault) and popular == len(fault),
        ),
        a.leq("non-2xx responses", a.non_2xx(a.window(run.samples, 0.0)), 0, unit="count"),
        a.leq("p99 while down", a.p99_ms(fault), 50.0, unit="ms", timing=True),
    ]
    _common(r, run, base, fault)
    return r


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
            delta = bucket_delta(
                buckets(after, name + "_bucket"), buckets(before, name + "_bucket")
            )
            value = histogram_quantile(0.99, delta)
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
            await run.sleep(plan.redis_fault_s)
            t_stop = run.mark("stop")
            await run.act(redis.pause)
            await run.sleep(plan.redis_fault_s)
            t_back2 = run.mark("back2")
            await run.act(redis.resume)
            await run.snapshot("back")
            await run.sleep(max(plan.after_s, 5.5))
        finally:
            await probe.stop()
    everything = a.window(run.samples, 0.0)
    base = _base(run, t_kill)
    fault = a.window(run.samples, t_kill, t_restart) + a.window(run.samples, t_stop, t_back2)
    reads = bucket_delta(
        buckets(run.snapshots["back"], FEATURE_BUCKET),
        buckets(run.snapshots["fault"], FEATURE_BUCKET),
    )
    read_p99 = histogram_quantile(0.99, reads)
    read_bound = quantile_bucket(0.99, reads)
    timeout_ms = target.facts.feature_timeout_ms
    lag_ms, lag_source = _loop_lag(
        run.snapshots["fault"], run.snapshots["back"], probe, t_kill, t_back2
    )
    stale = frozenset({"features_unavailable"})
    rec1 = a.recovery_time(
        run.samples, since=t_back1, horizon_s=t_stop - t_back1, reasons_not_allowed=stale
    )
    rec2 = a.recovery_time(
        run.samples, since=t_back2, horizon_s=run.now(), reasons_not_allowed=stale
    )
    degraded = sum(s.reason == "features_unavailable" for s in fault)
    r.checks = [
        a.leq("non-2xx responses", a.non_2xx(everything), 0, unit="count"),
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
        a.leq("full recovery after Redis restarted", rec1, 5.0, unit="s"),
        a.leq("full recovery after SIGCONT", rec2, 5.0, unit="s"),
    ]
    r.figures.update(restore_s=t_back1 - t_restart, feature_reads=reads[-1][1] if reads else 0)
    _common(r, run, base, fault)
    return r


async def d7_spike(target: DrillTarget, plan: Plan) -> DrillResult:
    """D7: a spike to ``spike_factor`` x the base rate for ``spike_s``."""
    r = DrillResult("D7", f"spike to {plan.spike_factor:g}x for {plan.spike_s:g} s")
    # More requests in flight than the gateway's own limit (GATEWAY_MAX_IN_FLIGHT, 256), so a
    # gateway that sheds gets the chance to.
    async with Run(target, rate=plan.spike_rate, seed=7, max_in_flight=1024) as run:
        await run.sleep(plan.baseline_s)
        t_up = run.mark("spike")
        run.gen.rate = plan.spike_rate * plan.spike_factor
        await run.sleep(plan.spike_s)
        t_down = run.mark("down")
        run.gen.rate = plan.spike_rate
        await run.sleep(max(plan.after_s, 10.5))
    base, spike = _base(run, t_up), a.window(run.samples, t_up, t_down)
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
    _common(r, run, base, spike)
    return r


async def d8_otlp_blackhole(target: DrillTarget, plan: Plan) -> DrillResult:
    """D8: the OTLP collector black-holed (proxy): latency and memory stay flat."""
    proxy = target.proxies["otlp"]
    r = DrillResult("D8", "OTLP collector black-holed")
    async with Run(target, rate=plan.rate, seed=8) as run:
        rss = RssSampler(pid=target.gateway_pid, t0=run.t0).start()
        try:
            await run.sleep(plan.otlp_s)
            t_hole = run.mark("blackhole")
            proxy.set_mode(BlackHole())
            await run.sleep(plan.otlp_s)
            t_end = run.mark("end")
        finally:
            proxy.set_mode(Pass())
            await rss.stop()
    base, fault = _base(run, t_hole), a.window(run.samples, t_hole, t_end)
    base_p99, fault_p99 = a.p99_ms(base), a.p99_ms(fault)
    mem_base = [b for t, b in rss.samples if t < t_hole]
    mem_fault = [b for t, b in rss.samples if t >= t_hole]
    growth = (max(mem_fault) - mem_base[-1]) / 2**20 if mem_base and mem_fault else None
    r.checks = [
        a.leq(
            "p99 black-holed vs baseline (+10%)",
            fault_p99,
            (base_p99 or 0.0) * 1.10,
            unit="ms",
            timing=True,
        ),
        Check(
            "gateway RSS growth",
            "n/a" if growth is None else f"{growth:+.1f} MiB",
            "<= 16 MiB (flat)",
            None if growth is None else growth <= 16.0,
        ),
        a.leq("non-2xx responses", a.non_2xx(a.window(run.samples, 0.0)), 0, unit="count"),
    ]
    r.figures.update(rss_start_mib=mem_base[-1] / 2**20 if mem_base else None)
    _common(r, run, base, fault)
    return r


Drill = Callable[[DrillTarget, Plan], Awaitable[DrillResult]]
DRILLS: dict[str, Drill] = {
    "D1": d1_triton_kill,
    "D2": d2_triton_freeze,
    "D3": d3_triton_slow,
    "D4": d4_triton_errors,
    "D5": d5_all_models_down,
    "D6": d6_redis_down,
    "D7": d7_spike,
    "D8": d8_otlp_blackhole,
}
NEEDS_PROXY = {"D3": "triton", "D4": "triton", "D8": "otlp"}


async def run_drills(
    target: DrillTarget, names: list[str], *, plan: Plan, heal: bool = True
) -> list[DrillResult]:
    """Run the named drills in order, healing the stack before each; skips those it cannot run."""
    results = []
    for name in names:
        if name not in DRILLS:
            raise ValueError(f"unknown drill {name!r} (known: {', '.join(DRILLS)})")
        needs = NEEDS_PROXY.get(name)
        if needs and needs not in target.proxies:
            result = DrillResult(name, DRILLS[name].__doc__ or name)
            result.checks = [Check("fault proxy", "missing", f"a {needs} proxy", None)]
            results.append(result)
            continue
        if heal:
            try:
                await asyncio.to_thread(target.heal)
            except Exception as exc:  # the stack could not be healed: this drill cannot run
                logger.exception("heal before %s failed", name)
                result = DrillResult(name, DRILLS[name].__doc__ or name)
                result.checks = [
                    Check("stack healthy before the drill", repr(exc)[:120], "healthy", False)
                ]
                results.append(result)
                continue
        logger.info("drill %s starting", name)
        try:
            result = await DRILLS[name](target, plan)
        except Exception as exc:  # a drill that crashes is a failed drill; the others still run
            logger.exception("drill %s crashed", name)
            result = DrillResult(name, DRILLS[name].__doc__ or name)
            result.checks = [Check("drill ran to the end", repr(exc)[:120], "no error", False)]
        logger.info("drill %s: %s", name, "PASS" if result.passed else "FAIL")
        results.append(result)
    if heal:
        try:
            await asyncio.to_thread(target.heal)
        except Exception:
            logger.exception("the stack did not heal after the drills")
    return results
