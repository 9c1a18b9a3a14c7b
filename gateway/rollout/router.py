"""The rollout on the request path: which Triton version serves a request, what it cost, and
the shadow calls.

Per request the chain asks :meth:`RolloutRouter.route` (no I/O: the state comes from the
``StateCache`` a background task refreshes every ``refresh_s``), calls the primary at the
route's version, and reports back: :meth:`record_call` (outcome and latency of the primary
call), :meth:`record_served` (whether the primary served the request or another tier did), and
:meth:`mirror` during the shadow phase. Counts go to Prometheus at once and to Redis in batches
(:meth:`flush`, every ``flush_s``), under the rollout id, the step and the arm, for the
controller's analysis. A request routed while the state was changing may be counted in the
step it was routed in, which is at most ``refresh_s`` stale: a small contamination the analysis
tolerates.

Shadow calls run in their own task after the answer is computed, never awaited by the request,
at most ``shadow_slots`` at a time; when the slots are full, or the event loop is saturated
(``AdaptiveLimit.saturated``), the mirror is dropped and counted: shadow traffic is the first
thing shed under load.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.rollout.assign import in_candidate
from gateway.rollout.metrics import RolloutMetrics
from gateway.rollout.state import Phase, RolloutState
from gateway.rollout.store import StateCache, StoreUnavailable
from gateway.tiers.types import TierResult
from gateway.tiers.validation import Catalogue, InvalidAnswer, check_answer

DRAIN_TIMEOUT_S = 2.0  # shadow calls have a 100 ms timeout; shutdown waits this long at most
logger = logging.getLogger(__name__)


class Arm(StrEnum):
    STABLE = "stable"
    CANDIDATE = "candidate"


class CallOutcome(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    INVALID = "invalid"


@dataclass(frozen=True)
class Route:
    """Where one request goes. ``version`` None: Triton's default (no rollout has run)."""

    version: int | None
    arm: Arm | None = None  # None: not counted (no rollout in progress, or a pinned version)
    rollout_id: str = ""
    step: int = -1
    shadow_version: int | None = None  # also mirror the request to this version


NO_ROLLOUT = Route(version=None)
MAX_PENDING_KEYS = 64  # counts kept while Redis is down (one key per step and arm)


def latency_field(elapsed: float, bounds: Sequence[float]) -> str:
    """The histogram field of one observation: ``lat_<i>``, i the first bound >= elapsed."""
    for i, bound in enumerate(bounds):
        if elapsed <= bound:
            return f"lat_{i}"
    return f"lat_{len(bounds)}"


def overlap_at_k(a: Sequence[int], b: Sequence[int], k: int) -> float:
    return len(set(a[:k]) & set(b[:k])) / k if k else 0.0


def score_correlation(a: TierResult, b: TierResult) -> float | None:
    """Pearson correlation of the scores of items both answers hold (None below 3 items)."""
    theirs = dict(zip(b.item_ids, b.scores, strict=True))
    pairs = [(s, theirs[i]) for i, s in zip(a.item_ids, a.scores, strict=True) if i in theirs]
    if len(pairs) < 3:
        return None
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    return sxy / math.sqrt(sxx * syy)


class RolloutRouter:
    """See the module docstring. One per app."""

    def __init__(
        self,
        cache: StateCache,
        metrics: RolloutMetrics,
        *,
        bounds: Sequence[float],
        shadow_slots: int = 4,
        saturated: Callable[[], bool] = lambda: False,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.bounds = tuple(bounds)
        self.saturated = saturated
        self._rng = rng
        self._clock = clock
        self._slots = shadow_slots
        self._pending: dict[tuple[str, int], dict[str, Counter[str]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopping = False  # set at shutdown: run() ends after its current tick
        self._first = True
        cache.on_change(self._changed)

    # -- the request path ---------------------------------------------------------------------

    def route(self, user_id: int, pinned: int | None = None) -> Route:
        """The version for this request (no I/O)."""
        if pinned is not None:
            return Route(version=pinned)
        state = self.cache.state
        plan = state.plan
        if not state.active or plan is None:
            return Route(version=state.stable_version) if state.stable_version else NO_ROLLOUT
        if state.phase is Phase.CANARY:
            if in_candidate(plan.rollout_id, user_id, state.candidate_percent):
                return Route(plan.candidate, Arm.CANDIDATE, plan.rollout_id, state.step)
            return Route(plan.stable, Arm.STABLE, plan.rollout_id, state.step)
        mirror = plan.candidate if self._rng() < state.shadow_share else None
        return Route(plan.stable, Arm.STABLE, plan.rollout_id, state.step, shadow_version=mirror)

    def record_call(self, route: Route, outcome: CallOutcome, elapsed: float) -> None:
        """One primary call made for ``route``."""
        if route.arm is None or route.version is None:
            return
        self._count_call(route, route.arm, route.arm.value, outcome, elapsed)

    def record_served(self, route: Route, *, by_primary: bool) -> None:
        """A request of ``route`` that reached the primary stage was answered (by the primary,
        or by a fallback tier)."""
        if route.arm is None or route.version is None:
            return
        counts = self._counts(route, route.arm)
        counts["requests"] += 1
        if not by_primary:
            counts["fallbacks"] += 1
            self.metrics.fallbacks.labels(version=str(route.version), arm=route.arm.value).inc()

    def mirror(
        self,
        route: Route,
        call: Callable[[int], Awaitable[TierResult]],
        served: TierResult,
        *,
        k: int,
        skip: set[int],
        catalogue: Catalogue,
    ) -> None:
        """Call the shadow version in the background (``call(version)``) and compare its answer
        with ``served``; dropped when the slots are full or the loop is saturated."""
        version = route.shadow_version
        if version is None:
            return
        if self.saturated():
            self.metrics.shadow_dropped.labels(cause="saturated").inc()
            return
        if self._slots <= 0:
            self.metrics.shadow_dropped.labels(cause="busy").inc()
            return
        self._slots -= 1
        task = asyncio.create_task(self._shadow(route, version, call, served, k, skip, catalogue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shadow(
        self,
        route: Route,
        version: int,
        call: Callable[[int], Awaitable[TierResult]],
        served: TierResult,
        k: int,
        skip: set[int],
        catalogue: Catalogue,
    ) -> None:
        started = self._clock()
        answer: TierResult | None = None
        try:
            answer = check_answer(await call(version), k=k, skip=skip, catalogue=catalogue)
            outcome = CallOutcome.OK
        except InvalidAnswer:
            outcome = CallOutcome.INVALID
        except UpstreamTimeout:
            outcome = CallOutcome.TIMEOUT
        except UpstreamError:
            outcome = CallOutcome.ERROR
        except Exception:  # off the request path: a bug in the mirror must not kill the loop
            logger.exception("shadow call to version %d raised", version)
            outcome = CallOutcome.ERROR
        finally:
            self._slots += 1
        shadow_route = Route(version, Arm.CANDIDATE, route.rollout_id, route.step)
        self._count_call(shadow_route, Arm.CANDIDATE, "shadow", outcome, self._clock() - started)
        if answer is not None:
            label = str(version)
            self.metrics.shadow_overlap.labels(version=label).observe(
                overlap_at_k(answer.item_ids, served.item_ids, k)
            )
            corr = score_correlation(answer, served)
            if corr is not None:
                self.metrics.shadow_correlation.labels(version=label).observe(corr)
        # In the shadow phase the mirror is the candidate's whole traffic: count it as requests.
        counts = self._counts(shadow_route, Arm.CANDIDATE)
        counts["requests"] += 1

    async def drain(self) -> None:
        """Wait for the shadow calls in flight (shutdown)."""
        if self._tasks:  # bounded: a shadow call stuck past its own timeout must not hang shutdown
            _, stuck = await asyncio.wait(list(self._tasks), timeout=DRAIN_TIMEOUT_S)
            for task in stuck:
                task.cancel()

    # -- counters ------------------------------------------------------------------------------

    def _counts(self, route: Route, arm: Arm) -> Counter[str]:
        by_arm = self._pending.setdefault((route.rollout_id, route.step), {})
        return by_arm.setdefault(arm.value, Counter())

    def _count_call(
        self, route: Route, arm: Arm, label: str, outcome: CallOutcome, elapsed: float
    ) -> None:
        version = str(route.version)
        self.metrics.calls.labels(version=version, arm=label, outcome=outcome.value).inc()
        self.metrics.call_seconds.labels(version=version, arm=label).observe(elapsed)
        counts = self._counts(route, arm)
        counts["calls"] += 1
        if outcome is CallOutcome.INVALID:
            counts["invalid"] += 1
        elif outcome is not CallOutcome.OK:
            counts["errors"] += 1
        counts[latency_field(elapsed, self.bounds)] += 1

    async def flush(self) -> None:
        """Add the pending counts to Redis; kept for the next flush when Redis is down (up to
        ``MAX_PENDING_KEYS`` steps, the oldest dropped beyond)."""
        pending, self._pending = self._pending, {}
        for (rollout_id, step), by_arm in pending.items():
            try:
                await self.cache.store.add_counts(rollout_id, step, by_arm)
            except StoreUnavailable:
                for arm, counts in by_arm.items():
                    self._pending.setdefault((rollout_id, step), {}).setdefault(
                        arm, Counter()
                    ).update(counts)
        while len(self._pending) > MAX_PENDING_KEYS:
            self._pending.pop(next(iter(self._pending)))

    async def tick(self) -> None:
        """Refresh the state, update the staleness gauge, flush the counts."""
        await self.cache.refresh()
        self.metrics.stale.set(1 if self.cache.stale else 0)
        await self.flush()

    async def run(self, *, refresh_s: float = 1.0) -> None:
        """Background: :meth:`tick` every ``refresh_s``."""
        while not self.stopping:
            await self.tick()
            await asyncio.sleep(refresh_s)

    def _changed(self, old: RolloutState, new: RolloutState) -> None:
        self.metrics.show(new)
        if self._first:  # the first read is this replica's start, not a transition
            self._first = False
            return
        if (old.phase, old.step, old.rollout_id) != (new.phase, new.step, new.rollout_id):
            self.metrics.transitions.labels(to=new.phase.value).inc()
            logger.info("rollout state now %s (rev %d)", new.label(), new.rev)
