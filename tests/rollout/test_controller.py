"""The controller on real Redis with an injected clock: a step continues, passes, advances and
promotes; worse CTR from the feedback counters rolls back; an operator's abort wins the race;
one replica holds the lock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from gateway.rollout import state as sm
from gateway.rollout.controller import RolloutController
from gateway.rollout.feedback import RedisFeedback, feedback_key
from gateway.rollout.state import Phase, Plan
from gateway.rollout.store import Conflict, RolloutStore, connect
from tests.rollout.conftest import REDIS_URL

T = TypeVar("T")
BOUNDS = (0.01, 0.02, 0.05, 0.1)
PLAN = Plan(rollout_id="rc", stable=1, candidate=2, shadow_s=0, steps=(10, 50), step_s=60)


def run(prefix: str, body: Callable[[RolloutStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = RolloutStore(connect(REDIS_URL), prefix=prefix)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def healthy(n: int) -> dict[str, int]:
    return {"requests": n, "calls": n, "errors": n // 500, "lat_1": n - n // 100, "lat_2": n // 100}


def test_continue_pass_advance_promote(prefix: str) -> None:
    now = [1000.0]

    async def body(store: RolloutStore) -> list[str]:
        await store.apply(lambda s: sm.start(s, PLAN, now=now[0]))
        ctl = RolloutController(store, bounds=BOUNDS, model="two_tower", clock=lambda: now[0])
        seen = []
        for step in (0, 1):
            await store.add_counts(
                "rc", step, {"candidate": healthy(1000), "stable": healthy(9000)}
            )
            now[0] += 30
            v = await ctl.look()
            assert v is not None
            seen.append(v.decision.value)
            now[0] += 31
            v = await ctl.look()
            assert v is not None
            seen.append(v.decision.value)
        state = await store.load()
        assert state.phase is Phase.PROMOTED and state.stable_version == 2
        assert await ctl.look() is None  # nothing active
        verdict = await store.load_verdict()
        assert verdict is not None and verdict["decision"] == "pass"
        return seen

    assert run(prefix, body) == ["continue", "pass", "continue", "pass"]


def test_worse_ctr_rolls_back(prefix: str) -> None:
    async def body(store: RolloutStore) -> None:
        await store.apply(lambda s: sm.start(s, PLAN, now=0))
        key = feedback_key(store.prefix)
        await store.client.hset(key, mapping={"two_tower/1:impressions": 50_000, "two_tower/1:clicks": 5000,
                                              "two_tower/2:impressions": 100, "two_tower/2:clicks": 10})  # fmt: skip
        ctl = RolloutController(store, bounds=BOUNDS, model="two_tower", clock=lambda: 10,
                                ctr=RedisFeedback(store))  # fmt: skip
        await store.add_counts("rc", 0, {"candidate": healthy(1000), "stable": healthy(9000)})
        v = await ctl.look()  # the first look sets the step's baseline
        assert v is not None and v.decision.value == "continue"
        await store.client.hincrby(key, "two_tower/1:clicks", 1800)  # 9% of 20,000
        await store.client.hincrby(key, "two_tower/1:impressions", 20_000)
        await store.client.hincrby(key, "two_tower/2:clicks", 80)  # 4% of 2,000
        await store.client.hincrby(key, "two_tower/2:impressions", 2000)
        v = await ctl.look()
        assert v is not None and v.decision.value == "fail" and "ctr worse" in v.reason
        assert "80/2000" in v.reason
        assert (await store.load()).phase is Phase.ROLLED_BACK

    run(prefix, body)


def test_lock_and_operator_race(prefix: str) -> None:
    async def body(store: RolloutStore) -> None:
        await store.apply(lambda s: sm.start(s, PLAN, now=0))
        first = RolloutController(store, bounds=BOUNDS, model="two_tower", clock=lambda: 100)
        second = RolloutController(store, bounds=BOUNDS, model="two_tower", clock=lambda: 100)
        await store.add_counts("rc", 0, {"candidate": healthy(1000), "stable": healthy(9000)})
        assert await first.look() is not None
        assert await second.look() is None  # the lock is the first's
        # the operator aborts between the controller's read and its write: the abort stands
        state = await store.load()
        await store.apply(lambda s: sm.roll_back(s, now=101, reason="operator", by="cli"))
        with pytest.raises(Conflict):
            await store.write(*sm.advance(state, now=102), expected_rev=state.rev)
        assert (await store.load()).phase is Phase.ROLLED_BACK

    run(prefix, body)
