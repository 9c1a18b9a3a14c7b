"""The store on the machine's real Redis, and with Redis unreachable (a closed port)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from gateway.rollout import state as sm
from gateway.rollout.state import IllegalTransition, Phase, Plan, RolloutState
from gateway.rollout.store import Conflict, RolloutStore, StateCache, StoreUnavailable, connect
from tests.rollout.conftest import REDIS_URL

T = TypeVar("T")
PLAN = Plan(rollout_id="r1", stable=1, candidate=2, shadow_s=0, steps=(1, 50), step_s=60)


def run(prefix: str, body: Callable[[RolloutStore], Awaitable[T]], url: str = REDIS_URL) -> T:
    async def main() -> T:
        store = RolloutStore(connect(url, timeout_s=0.2), prefix=prefix)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_transitions_persist_with_history_and_rev(prefix: str) -> None:
    async def body(store: RolloutStore) -> tuple[RolloutState, list[dict[str, object]]]:
        assert (await store.load()) == RolloutState()
        await store.apply(lambda s: sm.start(s, PLAN, now=10))
        await store.apply(lambda s: sm.advance(s, now=70))
        await store.apply(lambda s: sm.roll_back(s, now=71, reason="latency worse"))
        return await store.load(), await store.history()

    final, history = run(prefix, body)
    assert final.phase is Phase.ROLLED_BACK and final.rev == 3 and final.plan == PLAN
    assert [(h["from"], h["to"], h["step"]) for h in history] == [
        ("stable", "canary", 0), ("canary", "canary", 1), ("canary", "rolled_back", -1),
    ]  # fmt: skip
    assert history[-1]["reason"] == "latency worse"


def test_compare_and_set_refuses_a_stale_writer(prefix: str) -> None:
    async def body(store: RolloutStore) -> None:
        first, t = sm.start(RolloutState(), PLAN, now=0)
        await store.write(first, t, expected_rev=0)
        again, t2 = sm.start(RolloutState(), PLAN, now=1)  # read before the first write
        with pytest.raises(Conflict):
            await store.write(again, t2, expected_rev=0)
        assert len(await store.history()) == 1  # the losing transition was not logged

    run(prefix, body)


def test_illegal_transition_writes_nothing(prefix: str) -> None:
    async def body(store: RolloutStore) -> None:
        with pytest.raises(IllegalTransition):
            await store.apply(lambda s: sm.promote(s, now=0))
        assert await store.history() == [] and (await store.load()).rev == 0

    run(prefix, body)


def test_counters_baseline_and_lock(prefix: str) -> None:
    async def body(store: RolloutStore) -> None:
        await store.add_counts("r1", 0, {"candidate": {"requests": 3, "errors": 1}})
        await store.add_counts("r1", 0, {"candidate": {"requests": 2}, "stable": {"requests": 9}})
        assert await store.read_counts("r1", 0, "candidate") == {"requests": 5, "errors": 1}
        assert await store.read_counts("r1", 1, "candidate") == {}
        assert await store.ctr_baseline("r1", 0, {"2:clicks": 4}) == {"2:clicks": 4}
        assert await store.ctr_baseline("r1", 0, {"2:clicks": 9}) == {"2:clicks": 4}
        assert await store.hold_lock("a", ttl_s=5)
        assert not await store.hold_lock("b", ttl_s=5)
        assert await store.hold_lock("a", ttl_s=5)  # renewal by its owner

    run(prefix, body)


def test_cache_keeps_last_state_when_redis_goes_away(prefix: str) -> None:
    async def body(store: RolloutStore) -> None:
        await store.apply(lambda s: sm.start(s, PLAN, now=0))
        cache = StateCache(store)
        changes: list[tuple[int, int]] = []
        cache.on_change(lambda old, new: changes.append((old.rev, new.rev)))
        assert cache.stale
        known = await cache.refresh()
        assert known.phase is Phase.CANARY and not cache.stale and changes == [(0, 1)]
        await store.client.aclose()
        store.client = connect("redis://127.0.0.1:1/0", timeout_s=0.1)  # now unreachable
        assert await cache.refresh() == known and cache.stale

    run(prefix, body)


def test_unreachable_redis_is_a_clear_error_without_the_password(dead_url: str) -> None:
    async def body(store: RolloutStore) -> None:
        for call in (store.load(), store.history(), store.hold_lock("x", ttl_s=1)):
            with pytest.raises(StoreUnavailable) as err:
                await call
            assert "secretpw" not in str(err.value) and "unavailable" in str(err.value)
        cache = StateCache(store)
        assert await cache.refresh() == RolloutState() and cache.stale

    run("p", body, url=dead_url)
