"""The rollout controller: one gateway replica at a time judges the current step and moves the
state (advance, promote, roll back).

Every ``interval_s`` each replica tries to take (or renew) the controller lock in Redis (TTL
three intervals: a replica that dies hands over within 30 s); the holder reads the step's
counters all replicas flushed (``gateway.rollout.router``), the feedback counters of both
versions (clicks and impressions, diffed against their value at the step's first look), runs
``gateway.rollout.analysis.analyze`` and writes the verdict (``cascade rollout status`` shows
it). ``fail`` rolls back at once, ``pass`` advances (the last step's pass promotes). Writes are
compare-and-set against the state it judged: if an operator aborted meanwhile, the controller's
move is refused and nothing happens. Redis unavailable: the look is skipped and logged once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict

from gateway.rollout import state as sm
from gateway.rollout.analysis import AnalysisConfig, ArmCounts, Decision, Verdict, analyze
from gateway.rollout.metrics import RolloutMetrics
from gateway.rollout.state import Phase, RolloutState
from gateway.rollout.store import Conflict, RolloutStore, StoreUnavailable

logger = logging.getLogger(__name__)

# model version label ("two_tower/3") -> (impressions, clicks), cumulative
CtrSource = Callable[[Sequence[str]], Awaitable[Mapping[str, tuple[int, int]]]]


def version_label(model: str, version: int) -> str:
    """The ``model_version`` answers carry (``two_tower/3``), as feedback events echo it."""
    return f"{model}/{version}"


def arm_counts(raw: Mapping[str, int], n_buckets: int) -> ArmCounts:
    return ArmCounts(
        requests=raw.get("requests", 0),
        calls=raw.get("calls", 0),
        errors=raw.get("errors", 0),
        invalid=raw.get("invalid", 0),
        fallbacks=raw.get("fallbacks", 0),
        latency=tuple(raw.get(f"lat_{i}", 0) for i in range(n_buckets + 1)),
    )


def verdict_json(verdict: Verdict, state: RolloutState, at: float) -> dict[str, object]:
    return {
        "decision": verdict.decision.value,
        "reason": verdict.reason,
        "checks": [{**asdict(c), "status": c.status.value} for c in verdict.checks],
        "at": at,
        "rollout_id": state.rollout_id,
        "phase": state.label(),
        "rev": state.rev,
    }


class RolloutController:
    """See the module docstring."""

    def __init__(
        self,
        store: RolloutStore,
        *,
        bounds: Sequence[float],
        model: str,
        config: AnalysisConfig | None = None,
        interval_s: float = 10.0,
        ctr: CtrSource | None = None,
        metrics: RolloutMetrics | None = None,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.bounds = tuple(bounds)
        self.model = model
        self.config = config or AnalysisConfig()
        self.interval_s = interval_s
        self.ctr = ctr
        self.metrics = metrics
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._failing = False

    async def look(self) -> Verdict | None:
        """One analysis if this replica holds the lock and a rollout is active; the verdict."""
        if not await self.store.hold_lock(self.owner, ttl_s=3 * self.interval_s):
            return None
        state = await self.store.load()
        plan = state.plan
        if not state.active or plan is None:
            return None
        counts = {
            arm: arm_counts(
                await self.store.read_counts(plan.rollout_id, state.step, arm), len(self.bounds)
            )
            for arm in ("candidate", "stable")
        }
        if self.ctr is not None and state.phase is Phase.CANARY:
            counts = await self._with_ctr(state, counts)
        now = self.clock()
        verdict = analyze(
            counts["candidate"],
            counts["stable"],
            bounds=self.bounds,
            step_done=state.phase_due(now),
            config=self.config,
        )
        if self.metrics is not None:
            self.metrics.analysis.labels(decision=verdict.decision.value).inc()
        await self.store.save_verdict(verdict_json(verdict, state, now))
        try:
            if verdict.decision is Decision.FAIL:
                await self.store.write(
                    *sm.roll_back(state, now=now, reason=verdict.reason, by=self.owner),
                    expected_rev=state.rev,
                )
            elif verdict.decision is Decision.PASS:
                await self.store.write(
                    *sm.advance(state, now=now, reason=f"{state.label()} passed", by=self.owner),
                    expected_rev=state.rev,
                )
        except Conflict:  # someone (an operator) moved the state since: their move stands
            logger.info("rollout state changed during the analysis; verdict not applied")
        return verdict

    async def _with_ctr(
        self, state: RolloutState, counts: dict[str, ArmCounts]
    ) -> dict[str, ArmCounts]:
        assert self.ctr is not None and state.plan is not None
        labels = {
            "candidate": version_label(self.model, state.plan.candidate),
            "stable": version_label(self.model, state.plan.stable),
        }
        current = await self.ctr(list(labels.values()))
        flat = {
            f"{label}:{field}": current.get(label, (0, 0))[i]
            for label in labels.values()
            for i, field in enumerate(("impressions", "clicks"))
        }
        base = await self.store.ctr_baseline(state.plan.rollout_id, state.step, flat)
        out = {}
        for arm, label in labels.items():
            imp = flat[f"{label}:impressions"] - base.get(f"{label}:impressions", 0)
            clk = flat[f"{label}:clicks"] - base.get(f"{label}:clicks", 0)
            c = counts[arm]
            out[arm] = ArmCounts(
                c.requests, c.calls, c.errors, c.invalid, c.fallbacks, c.latency, imp, clk
            )
        return out

    async def run(self) -> None:
        """Look every ``interval_s`` until cancelled."""
        while True:
            try:
                await self.look()
                if self._failing:
                    logger.warning("rollout controller: Redis reachable again")
                self._failing = False
            except StoreUnavailable as exc:
                if not self._failing:
                    logger.warning("rollout controller: look skipped: %s", exc)
                self._failing = True
            await asyncio.sleep(self.interval_s)
