"""Drill D12: the events consumer down under load (issue 17).

Recommendations at ``plan.rate`` and ``POST /v1/events`` at ``plan.event_rate`` events/s (batches
of ``plan.event_batch``) for the whole drill; after ``baseline_s`` the consumer is killed
(SIGKILL: no graceful drain), stays down ``plan.consumer_down_s`` (60 s; CI 10 s), and is
started again; the event load goes on ``after_s``, then stops.

PASS iff
- **0 accepted events lost**: every event the gateway answered 202 for is applied to the online
  state, read from the consumer's own dedup keys in Redis (``<prefix>d:<event_id>``, written in
  the same Lua step as the state change), which a restart does not reset as it does counters.
  Not yet applied is not lost: the count waits until the consumer has nothing pending (at most
  ``plan.loss_wait_s``, 300 s) and reports when the last one was applied;
- **the lag drains within** ``plan.drain_limit_s`` (30 s, x slack in CI) **of the restart**: the
  consumer's ``events_consumer_pending`` back to at most one second of event load, read from its
  ``/metrics`` every 0.5 s;
- **0 non-2xx recommendations**: the recommendation path does not depend on the consumer; and
  no ``POST /v1/events`` refused while the log itself is up (the consumer's absence must not
  reach the API).
"""

from __future__ import annotations

import asyncio
import logging
import time

from cascade.drills import analysis as a
from cascade.drills.analysis import Check, DrillResult
from cascade.drills.event_load import EventLoad, applied_ids, consumer_figures
from cascade.drills.load import auth_headers
from cascade.drills.target import DrillTarget
from cascade.drills.timeline import Plan, Run, base_window, common_figures, non_2xx_check

logger = logging.getLogger(__name__)

POLL_S = 0.5


class LagWatch:
    """``(seconds since t0, pending or None)`` from the consumer's /metrics every ``POLL_S``."""

    def __init__(self, url: str, t0: float) -> None:
        self.url, self.t0 = url, t0
        self.samples: list[tuple[float, float | None]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> LagWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            figures = await consumer_figures(self.url, timeout_s=1.0)
            pending = figures.pending if figures is not None else None
            self.samples.append((time.monotonic() - self.t0, pending))
            await asyncio.sleep(POLL_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def drained_at(self, since: float, threshold: float) -> float | None:
        """First time after ``since`` the consumer answered with pending <= ``threshold``."""
        for t, pending in self.samples:
            if t >= since and pending is not None and pending <= threshold:
                return t
        return None

    def peak(self, start: float, end: float) -> float | None:
        values = [p for t, p in self.samples if start <= t <= end and p is not None]
        return max(values) if values else None


async def d12_consumer_down(target: DrillTarget, plan: Plan) -> DrillResult:
    """D12: the events consumer killed under event load, then restarted."""
    r = DrillResult("D12", f"events consumer down {plan.consumer_down_s:g} s under load")
    if not target.events_url or "events" not in target.procs or not target.redis_url:
        r.checks = [Check("events consumer in the stack", "missing", "consumer + Redis", None)]
        return r
    consumer = target.procs["events"]
    load = EventLoad(
        url=target.url,
        rate=plan.event_rate,
        batch=plan.event_batch,
        users=list(target.users[:5000]),
        headers=auth_headers(),
    )
    async with Run(target, rate=plan.rate, seed=12) as run:
        watch = LagWatch(target.events_url, run.t0).start()
        events = asyncio.create_task(load.run())
        try:
            await run.sleep(plan.baseline_s)
            t_kill = run.mark("kill")
            await run.act(consumer.kill)
            await run.sleep(plan.consumer_down_s)
            t_restart = run.mark("restart")
            await run.act(lambda: target.restore("events"))  # returns once /readyz answers
            t_ready = run.mark("ready")
            await run.sleep(plan.after_s)
        finally:
            load.stop()
            await events
        t_stop = run.mark("events_stop")
        limit = plan.recovery_limit(plan.drain_limit_s)
        threshold = max(float(plan.event_batch), plan.event_rate)  # one second of load
        while run.now() < t_restart + limit + 1 and watch.drained_at(t_restart, threshold) is None:
            await asyncio.sleep(POLL_S)
    # The recommendation load has stopped: what follows only waits on the consumer.
    # Every accepted event applied? Not yet applied is not lost while the log holds it: wait
    # until the consumer has nothing pending and its applied count stands still (or
    # ``loss_wait_s``), then count the accepted ids it never applied.
    prefix = target.events_prefix

    async def count() -> int:
        return await asyncio.to_thread(applied_ids, target.redis_url, load.accepted, prefix=prefix)

    applied, previous = await count(), -1
    while applied < len(load.accepted) and run.now() < t_stop + plan.loss_wait_s:
        pending = watch.samples[-1][1] if watch.samples else None
        if pending == 0 and applied == previous:
            break  # drained, and nothing more arrives: what is missing is lost
        await asyncio.sleep(2.0)
        applied, previous = await count(), applied
    t_applied = run.now()
    await watch.stop()
    drained = watch.drained_at(t_restart, threshold)
    drain_s = None if drained is None else drained - t_restart
    lost = len(load.accepted) - applied
    refused = sum(n for status, n in load.statuses.items() if status != "202")
    shed = load.statuses.get("503 overloaded", 0)
    base = base_window(run, t_kill)
    fault = a.window(run.samples, t_kill, t_restart)
    common_figures(r, run, base, fault)
    r.figures.update(
        events_accepted=len(load.accepted),
        events_applied=applied,
        all_applied_s_after_restart=f"{t_applied - t_restart:.0f}"
        if applied == len(load.accepted)
        else None,
        event_batches=str(dict(load.statuses)),
        accepted_events_per_s=None
        if load.accepted_rate() is None
        else f"{load.accepted_rate():.0f}",
        peak_pending=watch.peak(t_kill, t_stop),
        drain_s=None if drain_s is None else f"{drain_s:.1f}",
        # of which the consumer's own start (imports, Feast registry) until its /readyz
        consumer_start_s=f"{t_ready - t_restart:.1f}",
        events_p99_ms=a.percentile([x * 1000 for x in load.latencies], 99),
    )
    r.checks = [
        a.leq("accepted events lost", lost, 0, unit="count"),
        a.leq("lag drained after the restart", drain_s, limit, unit="s", timing=True),
        non_2xx_check(run.samples, plan),
        a.leq("event batches refused while the log was up", refused, 0, unit="count")
        if not plan.sheds_are_load
        else a.leq(
            f"event batches refused (+{shed} shed: busy machine)", refused - shed, 0, unit="count"
        ),
    ]
    if drain_s is None:
        r.notes.append(f"pending never fell to {threshold:g} within {limit:g} s of the restart")
    return r
