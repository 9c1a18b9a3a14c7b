"""The breaker's state machine with an injected clock and explicit call durations (no sleeps)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pybreaker
import pytest

from gateway.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    BreakerOpenError,
    SlidingWindowBreaker,
)


class Clock:
    """A manual clock: tests move time explicitly."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CFG = BreakerConfig(
    window_size=100,
    minimum_calls=50,
    failure_rate_threshold=0.5,
    slow_call_seconds=0.100,
    wait_seconds=5.0,
    half_open_calls=2,
    consecutive_failures=0,  # the window rules alone; the in-a-row rule has its own tests
)


def make(config: BreakerConfig = CFG) -> tuple[SlidingWindowBreaker, Clock, list[tuple[str, str]]]:
    clock = Clock()
    transitions: list[tuple[str, str]] = []
    breaker = SlidingWindowBreaker(
        config=config,
        clock=clock,
        on_transition=[lambda _n, old, new: transitions.append((old, new))],
    )
    return breaker, clock, transitions


def call(
    breaker: SlidingWindowBreaker, clock: Clock, *, duration: float = 0.010, ok: bool = True
) -> bool:
    """One call that takes ``duration`` seconds on the injected clock; False when rejected."""
    permit = breaker.try_acquire()
    if permit is None:
        return False
    clock.advance(duration)
    breaker.record(permit, duration=duration, ok=ok)
    return True


def trip(breaker: SlidingWindowBreaker, clock: Clock) -> None:
    for _ in range(CFG.minimum_calls):
        call(breaker, clock, ok=False)
    assert breaker.state == OPEN


def test_opens_on_failure_rate() -> None:
    breaker, clock, transitions = make()
    for i in range(60):
        call(breaker, clock, ok=i % 2 == 0)  # every other call fails: 50%
        if breaker.state == OPEN:
            break
    assert breaker.state == OPEN
    assert i + 1 == CFG.minimum_calls  # evaluated as soon as the minimum is reached
    assert transitions == [(CLOSED, OPEN)]
    assert breaker.cb.current_state == OPEN  # pybreaker holds the state


def test_below_threshold_stays_closed() -> None:
    breaker, clock, _ = make()
    for i in range(300):
        call(breaker, clock, ok=i % 5 != 0)  # 20% failures
    assert breaker.state == CLOSED


def test_opens_on_slow_call_rate_even_when_all_succeed() -> None:
    breaker, clock, _ = make()
    for i in range(CFG.minimum_calls):
        call(breaker, clock, duration=0.150 if i % 2 else 0.020, ok=True)
    failure_rate, slow_rate, n = breaker.rates() if breaker.state == CLOSED else (0.0, 0.0, 0)
    assert breaker.state == OPEN, (failure_rate, slow_rate, n)


def test_call_at_exactly_the_threshold_is_not_slow() -> None:
    breaker, clock, _ = make()
    for _ in range(CFG.minimum_calls):
        call(breaker, clock, duration=CFG.slow_call_seconds)
    assert breaker.state == CLOSED


def test_minimum_calls_rule() -> None:
    breaker, clock, _ = make()
    for _ in range(CFG.minimum_calls - 1):
        call(breaker, clock, ok=False)  # 100% failures, but too few calls to judge
    assert breaker.state == CLOSED
    call(breaker, clock, ok=False)
    assert breaker.state == OPEN


def test_window_slides_old_failures_out() -> None:
    breaker, clock, _ = make()
    for _ in range(20):
        call(breaker, clock, ok=False)
    for _ in range(100):
        call(breaker, clock, ok=True)  # 20 failures then 100 successes: window holds 0% at the end
    failure_rate, _, n = breaker.rates()
    assert breaker.state == CLOSED and n == 100 and failure_rate == 0.0


def test_open_rejects_for_the_wait_period_then_half_open() -> None:
    breaker, clock, transitions = make()
    trip(breaker, clock)
    clock.advance(4.999)
    assert breaker.try_acquire() is None
    clock.advance(0.002)
    permit = breaker.try_acquire()
    assert permit is not None and permit.trial
    assert breaker.state == HALF_OPEN
    assert transitions[-1] == (OPEN, HALF_OPEN)


def test_half_open_closes_after_trials_succeed() -> None:
    breaker, clock, transitions = make()
    trip(breaker, clock)
    clock.advance(5.0)
    assert call(breaker, clock)
    assert breaker.state == HALF_OPEN
    assert call(breaker, clock)
    assert breaker.state == CLOSED
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert breaker.rates()[2] == 0  # a fresh window after closing


@pytest.mark.parametrize(("duration", "ok"), [(0.010, False), (0.250, True)])
def test_half_open_reopens_on_failed_or_slow_trial(duration: float, ok: bool) -> None:
    breaker, clock, transitions = make()
    trip(breaker, clock)
    clock.advance(5.0)
    assert call(breaker, clock, duration=duration, ok=ok)
    assert breaker.state == OPEN
    assert transitions[-1] == (HALF_OPEN, OPEN)
    clock.advance(1.0)
    assert breaker.try_acquire() is None  # a new wait period started at the re-open


def test_half_open_trial_limit_under_concurrency() -> None:
    """Ten coroutines reach the half-open breaker at once: two go through, eight are rejected."""
    breaker, clock, _ = make()
    trip(breaker, clock)
    clock.advance(5.0)
    release = asyncio.Event()
    outcomes: list[str] = []

    async def one() -> None:
        try:
            async with breaker.guard():
                await release.wait()  # every admitted call is in flight at the same time
                clock.advance(0.005)
            outcomes.append("ok")
        except BreakerOpenError:
            outcomes.append("rejected")

    async def main() -> None:
        tasks = [asyncio.create_task(one()) for _ in range(10)]
        await asyncio.sleep(0)  # let all ten reach the breaker before any finishes
        await asyncio.sleep(0)
        assert breaker.state == HALF_OPEN
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert outcomes.count("ok") == 2 and outcomes.count("rejected") == 8
    assert breaker.state == CLOSED


def test_cancelled_trial_frees_its_slot() -> None:
    breaker, clock, _ = make()
    trip(breaker, clock)
    clock.advance(5.0)
    first = breaker.try_acquire()
    second = breaker.try_acquire()
    assert first is not None and second is not None and breaker.try_acquire() is None
    breaker.release(first)
    third = breaker.try_acquire()
    assert third is not None and third.trial


def test_thirty_percent_random_failures_under_fifty_percent_threshold_do_not_open() -> None:
    breaker, clock, transitions = make()
    rng = random.Random(7)
    for _ in range(5000):
        call(breaker, clock, ok=rng.random() >= 0.30)
    assert breaker.state == CLOSED and transitions == []


def test_stale_result_from_before_a_transition_is_ignored() -> None:
    breaker, clock, _ = make()
    slow_permit = breaker.try_acquire()
    assert slow_permit is not None
    trip(breaker, clock)
    clock.advance(5.0)
    assert call(breaker, clock) and call(breaker, clock)
    assert breaker.state == CLOSED
    breaker.record(slow_permit, duration=10.0, ok=False)  # the old call finally ends
    assert breaker.rates()[2] == 0 and breaker.state == CLOSED


def test_guard_records_exceptions_as_failures() -> None:
    breaker, _clock, _ = make(BreakerConfig(window_size=4, minimum_calls=2))

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(RuntimeError):
                async with breaker.guard():
                    raise RuntimeError("upstream down")
        with pytest.raises(BreakerOpenError):
            async with breaker.guard():
                pass

    asyncio.run(main())
    assert breaker.state == OPEN


def test_shared_state_is_adopted_from_storage() -> None:
    """Two replicas share one storage object (in production: pybreaker's Redis storage)."""

    class SharedStorage(pybreaker.CircuitMemoryStorage):
        """Memory storage standing in for Redis in a unit test (Redis storage is tested live)."""

    storage = SharedStorage(CLOSED)
    clock = Clock()
    cfg = BreakerConfig(window_size=10, minimum_calls=10)
    a = SlidingWindowBreaker(
        config=cfg, clock=clock, storage=storage, shared=True, shared_sync_seconds=0.0
    )
    b = SlidingWindowBreaker(
        config=cfg, clock=clock, storage=storage, shared=True, shared_sync_seconds=0.0
    )
    for _ in range(10):
        call(a, clock, ok=False)
    assert a.state == OPEN
    assert b.state == OPEN and b.try_acquire() is None
    clock.advance(5.0)
    assert call(a, clock) and call(a, clock)
    assert a.state == CLOSED and b.state == CLOSED


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(window_size=10, minimum_calls=11)
    with pytest.raises(ValueError):
        BreakerConfig(failure_rate_threshold=0.0)
    with pytest.raises(ValueError):
        BreakerConfig(half_open_calls=0)


def test_state_shared_through_real_redis() -> None:
    """Two replicas share pybreaker's Redis storage (the real Redis at 127.0.0.1:6379)."""
    import uuid

    import redis

    from gateway.breaker import redis_storage

    url = "redis://127.0.0.1:6379/0"
    probe = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        probe.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    finally:
        probe.close()  # an unclosed client is a ResourceWarning, an error under our filters
    namespace = f"test:breaker:{uuid.uuid4().hex}"
    clock = Clock()
    cfg = BreakerConfig(window_size=10, minimum_calls=10)
    storages = [redis_storage(url=url, namespace=namespace) for _ in range(2)]
    a, b = (
        SlidingWindowBreaker(config=cfg, clock=clock, storage=s, shared_sync_seconds=0.0)
        for s in storages
    )
    try:
        for _ in range(10):
            call(a, clock, ok=False)
        assert a.state == OPEN and b.state == OPEN
        clock.advance(5.0)
        assert call(a, clock) and call(a, clock)
        assert a.state == CLOSED and b.state == CLOSED
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        for storage in storages:
            storage._redis.close()


def test_failures_in_a_row_open_it_before_the_window_has_its_minimum() -> None:
    """A hard-down primary (killed: every call refused) opens it in N calls, not half a window."""
    breaker, clock, transitions = make(replace(CFG, consecutive_failures=5))
    for _ in range(4):
        assert call(breaker, clock, ok=False)
    assert breaker.state == CLOSED
    assert call(breaker, clock, ok=False)
    assert breaker.state == OPEN
    assert transitions == [(CLOSED, OPEN)]


def test_a_success_resets_the_run_of_failures() -> None:
    """Scattered errors (D4: 30% random failures) never make a run long enough to open it."""
    breaker, clock, _ = make(replace(CFG, consecutive_failures=5))
    for _ in range(40):  # 4 failures, 1 success: 80% failures but never 5 in a row
        for ok in (False, False, False, False, True):
            assert call(breaker, clock, ok=ok)
        if breaker.state != CLOSED:
            break
    # the window rule (50% over >= 50 calls) is what opens it here, not the run rule
    assert breaker.state == OPEN
    breaker2, clock2, _ = make(replace(CFG, consecutive_failures=5))
    for _ in range(8):
        for ok in (False, False, False, False, True):
            assert call(breaker2, clock2, ok=ok)
    assert breaker2.state == CLOSED  # 40 calls < minimum_calls and no run of 5


def test_consecutive_failures_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="consecutive_failures"):
        BreakerConfig(consecutive_failures=-1)
