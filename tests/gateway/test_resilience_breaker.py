"""The resilience package: breaker state machine, window verdicts, storages (injected clock, no sleeps)."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis

from gateway.resilience.breaker import (
    STATE_VALUES,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Permit,
    redis_storage,
)
from gateway.resilience.storage import InMemoryStorage, RedisStorage, StateStorage
from gateway.resilience.window import CountWindow, Verdict

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
REDIS_URL = "redis://127.0.0.1:6379/0"


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
    slow_call_rate_threshold=0.5,
    slow_call_seconds=0.100,
    wait_seconds=5.0,
    half_open_calls=2,
    consecutive_failures=0,  # the window rules alone; the in-a-row rule has its own tests
)


def make(
    config: BreakerConfig = CFG, storage: StateStorage | None = None, sync_seconds: float = 0.5
) -> tuple[CircuitBreaker, Clock, list[tuple[str, str]]]:
    clock = Clock()
    transitions: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        config=config,
        clock=clock,
        storage=storage,
        on_transition=[lambda _n, old, new: transitions.append((old, new))],
        shared_sync_seconds=sync_seconds,
    )
    return breaker, clock, transitions


def call(
    breaker: CircuitBreaker, clock: Clock, *, duration: float = 0.010, ok: bool = True
) -> bool:
    """One call that takes ``duration`` seconds on the injected clock; False when rejected."""
    permit = breaker.try_acquire()
    if permit is None:
        return False
    clock.advance(duration)
    breaker.record(permit, duration=duration, ok=ok)
    return True


def trip(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(CFG.minimum_calls):
        call(breaker, clock, ok=False)
    assert breaker.state == OPEN


# -- the closed state's window ----------------------------------------------------------------


def test_opens_on_failure_rate() -> None:
    storage = InMemoryStorage()
    breaker, clock, transitions = make(storage=storage)
    for i in range(60):
        call(breaker, clock, ok=i % 2 == 0)  # every other call fails: 50%
        if breaker.state == OPEN:
            break
    assert breaker.state == OPEN
    assert i + 1 == CFG.minimum_calls  # evaluated as soon as the minimum is reached
    assert transitions == [(CLOSED, OPEN)]
    assert storage.read() is BreakerState.OPEN  # the storage holds the state


def test_below_threshold_stays_closed() -> None:
    breaker, clock, _ = make()
    for i in range(300):
        call(breaker, clock, ok=i % 5 != 0)  # 20% failures
    assert breaker.state == CLOSED


def test_opens_on_slow_call_rate_even_when_all_succeed() -> None:
    breaker, clock, _ = make()
    for i in range(CFG.minimum_calls - 1):
        call(breaker, clock, duration=0.150 if i % 2 else 0.020, ok=True)
    assert breaker.state == CLOSED and breaker.rates()[0] == 0.0
    call(breaker, clock, duration=0.150, ok=True)
    assert breaker.state == OPEN


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


def test_thirty_percent_random_failures_under_fifty_percent_threshold_do_not_open() -> None:
    breaker, clock, transitions = make()
    rng = random.Random(7)
    for _ in range(5000):
        call(breaker, clock, ok=rng.random() >= 0.30)
    assert breaker.state == CLOSED and transitions == []


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


# -- separate thresholds ----------------------------------------------------------------------


def test_slow_call_threshold_is_separate_from_the_failure_threshold() -> None:
    """60% slow calls: tolerated under a 0.8 slow-call threshold, though 0.5 is the failure one."""
    cfg = replace(CFG, window_size=10, minimum_calls=10, slow_call_rate_threshold=0.8)
    breaker, clock, _ = make(cfg)
    for i in range(50):
        call(breaker, clock, duration=0.150 if i % 5 < 3 else 0.010)
    assert breaker.state == CLOSED and breaker.rates()[1] == pytest.approx(0.6)
    for _ in range(8):
        call(breaker, clock, duration=0.150)  # the window becomes 80%+ slow
    assert breaker.state == OPEN


def test_failure_threshold_is_separate_from_the_slow_call_threshold() -> None:
    cfg = replace(CFG, window_size=10, minimum_calls=10, failure_rate_threshold=0.2)
    breaker, clock, _ = make(cfg)
    for i in range(10):
        call(breaker, clock, duration=0.150, ok=i != 0)  # 10% failures, 100% slow: opens (slow)
    assert breaker.state == OPEN
    breaker2, clock2, _ = make(replace(cfg, slow_call_rate_threshold=1.0))
    for i in range(9):
        call(breaker2, clock2, duration=0.050, ok=i % 10 not in (0, 1))
    assert breaker2.state == CLOSED
    call(breaker2, clock2, duration=0.050)  # 10 calls, 2 failed: 20% reaches the 0.2 threshold
    assert breaker2.state == OPEN


def test_window_verdicts() -> None:
    w = CountWindow(BreakerConfig(window_size=4, minimum_calls=4, consecutive_failures=0))
    assert w.record(failed=True, slow=False) is Verdict.BELOW_MINIMUM_CALLS
    assert w.record(failed=False, slow=False) is Verdict.BELOW_MINIMUM_CALLS
    assert w.record(failed=False, slow=False) is Verdict.BELOW_MINIMUM_CALLS
    assert w.record(failed=False, slow=True) is Verdict.BELOW_THRESHOLDS  # 25% and 25%
    assert w.record(failed=False, slow=True) is Verdict.SLOW_CALL_RATE_ABOVE  # first one out
    assert w.record(failed=True, slow=True) is Verdict.SLOW_CALL_RATE_ABOVE  # 25% failed, 75% slow
    assert w.record(failed=True, slow=True) is Verdict.FAILURE_RATE_ABOVE  # both: failure first
    s = w.snapshot()
    assert (s.calls, s.failed, s.slow, s.failed_in_a_row) == (4, 2, 4, 2)
    assert (s.failure_rate, s.slow_call_rate) == (0.5, 1.0)


def test_window_consecutive_failures_verdict_comes_first() -> None:
    w = CountWindow(BreakerConfig(window_size=10, minimum_calls=10, consecutive_failures=3))
    assert w.record(failed=True, slow=False) is Verdict.BELOW_MINIMUM_CALLS
    assert w.record(failed=True, slow=False) is Verdict.BELOW_MINIMUM_CALLS
    assert w.record(failed=True, slow=False) is Verdict.CONSECUTIVE_FAILURES
    assert w.record(failed=False, slow=False) is Verdict.BELOW_MINIMUM_CALLS  # run broken
    assert w.snapshot().failed_in_a_row == 0


def test_which_verdicts_open_it() -> None:
    opening = {v for v in Verdict if v.opens}
    assert opening == {
        Verdict.CONSECUTIVE_FAILURES,
        Verdict.FAILURE_RATE_ABOVE,
        Verdict.SLOW_CALL_RATE_ABOVE,
    }


# -- open and half-open -----------------------------------------------------------------------


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


async def _guarded(breaker: CircuitBreaker, clock: Clock, work: asyncio.Event) -> str:
    """The caller's side of the protocol, as the chain does it around an awaited call."""
    permit = breaker.try_acquire()
    if permit is None:
        return "rejected"
    started = clock()
    try:
        await work.wait()
        clock.advance(0.005)
    except Exception:
        breaker.record(permit, duration=clock() - started, ok=False)
        return "failed"
    except BaseException:
        breaker.release(permit)  # cancelled: the caller gave up, no verdict
        raise
    breaker.record(permit, duration=clock() - started, ok=True)
    return "ok"


def test_half_open_trial_limit_under_concurrency() -> None:
    """Ten coroutines reach the half-open breaker at once: two go through, eight are rejected."""
    breaker, clock, _ = make()
    trip(breaker, clock)
    clock.advance(5.0)

    async def main() -> list[str]:
        release = asyncio.Event()
        tasks = [asyncio.create_task(_guarded(breaker, clock, release)) for _ in range(10)]
        await asyncio.sleep(0)  # let all ten reach the breaker before any finishes
        await asyncio.sleep(0)
        assert breaker.state == HALF_OPEN
        release.set()
        return await asyncio.gather(*tasks)

    outcomes = asyncio.run(main())
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


def test_cancelled_coroutine_releases_its_trial_slot() -> None:
    breaker, clock, _ = make()
    trip(breaker, clock)
    clock.advance(5.0)

    async def main() -> None:
        never = asyncio.Event()
        tasks = [asyncio.create_task(_guarded(breaker, clock, never)) for _ in range(2)]
        await asyncio.sleep(0)
        assert breaker.try_acquire() is None  # both slots taken
        tasks[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
        assert breaker.try_acquire() is not None  # the cancelled call's slot
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)

    asyncio.run(main())
    assert breaker.state == HALF_OPEN  # no verdict from cancelled calls


def test_failed_calls_open_it_then_it_rejects() -> None:
    """(Was the guard() test.) Failures recorded by callers open it; the next call is rejected."""
    breaker, clock, _ = make(BreakerConfig(window_size=4, minimum_calls=2))
    for _ in range(2):
        assert call(breaker, clock, ok=False)
    assert breaker.try_acquire() is None
    assert breaker.state == OPEN


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


def test_stale_release_and_double_record_change_nothing() -> None:
    breaker, clock, _ = make()
    trip(breaker, clock)
    clock.advance(5.0)
    old: Permit | None = breaker.try_acquire()
    assert old is not None
    breaker.record(old, duration=0.5, ok=True)  # slow trial: re-opened
    breaker.record(old, duration=0.01, ok=True)  # a second verdict is ignored
    assert breaker.state == OPEN
    clock.advance(5.0)
    a, b = breaker.try_acquire(), breaker.try_acquire()
    assert a is not None and b is not None
    breaker.release(old)  # already done, and from an older generation: frees no slot
    assert breaker.try_acquire() is None


def test_force_open_restarts_the_wait_and_reset_closes() -> None:
    breaker, clock, transitions = make()
    breaker.force_open()
    clock.advance(4.0)
    breaker.force_open()  # already open: the wait starts again (and observers hear open -> open)
    clock.advance(4.0)
    assert breaker.try_acquire() is None
    clock.advance(1.0)
    assert breaker.try_acquire() is not None and breaker.state == HALF_OPEN
    breaker.reset()
    assert breaker.state == CLOSED and breaker.rates() == (0.0, 0.0, 0)
    assert transitions == [(CLOSED, OPEN), (OPEN, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_held_open_with_an_infinite_wait() -> None:
    breaker, clock, _ = make(replace(CFG, wait_seconds=float("inf")))
    breaker.force_open()
    clock.advance(1e9)
    assert breaker.try_acquire() is None and breaker.state == OPEN


def test_observers_get_the_name_and_plain_strings() -> None:
    seen: list[tuple[str, str, str]] = []
    breaker = CircuitBreaker(name="p2", clock=Clock(), on_transition=[lambda *a: seen.append(a)])
    breaker.force_open()
    assert seen == [("p2", "closed", "open")] and breaker.name == "p2"
    assert all(type(x) is str for x in seen[0])
    assert set(STATE_VALUES) == {s.value for s in BreakerState}
    assert STATE_VALUES == {"closed": 0, "half-open": 1, "open": 2}


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(window_size=10, minimum_calls=11)
    with pytest.raises(ValueError):
        BreakerConfig(failure_rate_threshold=0.0)
    with pytest.raises(ValueError, match="slow_call_rate_threshold"):
        BreakerConfig(slow_call_rate_threshold=1.5)
    with pytest.raises(ValueError):
        BreakerConfig(half_open_calls=0)
    with pytest.raises(ValueError, match="slow_call_seconds"):
        BreakerConfig(slow_call_seconds=0.0)


def test_consecutive_failures_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="consecutive_failures"):
        BreakerConfig(consecutive_failures=-1)


def test_config_defaults() -> None:
    c = BreakerConfig()
    assert (c.window_size, c.minimum_calls, c.half_open_calls, c.consecutive_failures) == (
        100,
        50,
        2,
        20,
    )
    assert (c.failure_rate_threshold, c.slow_call_rate_threshold) == (0.5, 0.5)
    assert (c.slow_call_seconds, c.wait_seconds) == (0.100, 5.0)


# -- storage ----------------------------------------------------------------------------------


def test_in_memory_storage() -> None:
    storage = InMemoryStorage()
    assert storage.read() is BreakerState.CLOSED
    storage.write(BreakerState.HALF_OPEN)
    assert storage.read() is BreakerState.HALF_OPEN


def test_initial_state_comes_from_the_storage() -> None:
    breaker, clock, transitions = make(storage=InMemoryStorage(BreakerState.OPEN))
    assert breaker.state == OPEN and breaker.try_acquire() is None
    clock.advance(5.0)  # the wait counts from construction
    assert breaker.try_acquire() is not None and transitions == [(OPEN, HALF_OPEN)]


def test_shared_state_is_adopted_from_storage() -> None:
    """Two replicas share one storage object (in production: Redis)."""
    storage = InMemoryStorage()
    clock = Clock()
    cfg = BreakerConfig(window_size=10, minimum_calls=10)
    b_saw: list[tuple[str, str]] = []
    a = CircuitBreaker(config=cfg, clock=clock, storage=storage, shared_sync_seconds=0.0)
    b = CircuitBreaker(
        config=cfg,
        clock=clock,
        storage=storage,
        shared_sync_seconds=0.0,
        on_transition=[lambda _n, old, new: b_saw.append((old, new))],
    )
    for _ in range(10):
        call(a, clock, ok=False)
    assert a.state == OPEN
    assert b.state == OPEN and b.try_acquire() is None
    clock.advance(5.0)
    assert call(a, clock)
    assert a.state == HALF_OPEN and b.state == OPEN  # a shared half-open is not adopted
    assert call(a, clock)
    assert a.state == CLOSED and b.state == CLOSED
    assert b_saw == [(CLOSED, OPEN), (OPEN, CLOSED)]


def test_shared_state_is_read_at_most_every_sync_period() -> None:
    storage = InMemoryStorage()
    clock = Clock()
    a = CircuitBreaker(clock=clock, storage=storage, shared_sync_seconds=0.5)
    b = CircuitBreaker(clock=clock, storage=storage, shared_sync_seconds=0.5)
    assert b.state == CLOSED  # synced now
    a.force_open()
    clock.advance(0.25)
    assert b.state == CLOSED and b.try_acquire() is not None  # not re-read yet
    clock.advance(0.25)
    assert b.state == OPEN


@pytest.fixture
def live_redis() -> Iterator[str]:
    """A unique namespace on the real Redis at 127.0.0.1:6379; its keys are deleted afterwards."""
    probe = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        probe.ping()
    except redis.RedisError:
        probe.close()
        pytest.skip("no Redis at 127.0.0.1:6379")
    namespace = f"test:resilience:{uuid.uuid4().hex}"
    try:
        yield namespace
    finally:
        keys = list(probe.scan_iter(f"{namespace}:*"))
        if keys:
            probe.delete(*keys)
        probe.close()  # an unclosed client is a ResourceWarning, an error under our filters


def test_redis_storage_reads_back_what_it_wrote(live_redis: str) -> None:
    storage = redis_storage(url=REDIS_URL, namespace=live_redis)
    try:
        assert storage.read() is BreakerState.CLOSED  # no key yet: nobody opened it
        for state in BreakerState:
            storage.write(state)
            assert storage.read() is state
        client = redis.Redis.from_url(REDIS_URL)
        # pybreaker's key and values: old and new replicas share it during a rolling upgrade
        assert client.get(f"{live_redis}:pybreaker:state") == b"half-open"
        client.set(storage.key, "bogus")
        assert storage.read() is None and storage.read() is None  # unknown: keep the local state
        client.close()
    finally:
        storage.close()


def test_state_shared_through_real_redis(live_redis: str) -> None:
    """Two replicas share the Redis storage (the real Redis at 127.0.0.1:6379)."""
    clock = Clock()
    cfg = BreakerConfig(window_size=10, minimum_calls=10)
    storages = [redis_storage(url=REDIS_URL, namespace=live_redis) for _ in range(2)]
    a, b = (
        CircuitBreaker(config=cfg, clock=clock, storage=s, shared_sync_seconds=0.0)
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
        for storage in storages:
            storage.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there now: connections are refused


def test_unreachable_redis_never_raises_and_keeps_the_local_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = redis_storage(url=f"redis://127.0.0.1:{_closed_port()}/0", namespace="t")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="gateway.resilience.storage"):
        cfg = BreakerConfig(window_size=4, minimum_calls=2)
        breaker, clock, _ = make(cfg, storage=storage, sync_seconds=0.0)
        assert breaker.state == CLOSED  # unreadable at start: closed
        assert call(breaker, clock, ok=False) and call(breaker, clock, ok=False)
        assert breaker.state == OPEN  # written nowhere, kept here
        clock.advance(5.0)
        assert call(breaker, clock) and call(breaker, clock)
        assert breaker.state == CLOSED
        breaker.force_open()
        assert breaker.state == OPEN
        breaker.reset()
        assert breaker.try_acquire() is not None
    storage.close()
    assert time.monotonic() - started < 2.0  # refused at once, no retries with backoff
    unavailable = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(unavailable) == 1  # logged when it starts, not per call


class FlakyClient:
    """A redis client stand-in whose connection can be cut and restored."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.down = False

    def get(self, key: str) -> bytes | None:
        if self.down:
            raise redis.ConnectionError("Connection reset by peer")
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        if self.down:
            raise redis.ConnectionError("Connection reset by peer")
        self.data[key] = value.encode()

    def close(self) -> None:
        pass


def test_redis_lost_later_keeps_the_local_state_and_republishes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FlakyClient()
    storage = RedisStorage(client, namespace="t")  # type: ignore[arg-type]
    other = RedisStorage(client, namespace="t")  # type: ignore[arg-type]
    breaker, _clock, transitions = make(storage=storage, sync_seconds=0.0)
    with caplog.at_level(logging.WARNING, logger="gateway.resilience.storage"):
        assert breaker.state == CLOSED
        client.down = True
        breaker.force_open()  # the write is lost: logged, not raised
        for _ in range(5):
            assert breaker.state == OPEN  # unreadable: the local state stands
        client.down = False
        assert breaker.state == OPEN  # the missed write is published before reading
        assert other.read() is BreakerState.OPEN
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis unavailable" in m for m in messages) == 1
    assert sum("Redis reachable again" in m for m in messages) == 1
    assert transitions == [(CLOSED, OPEN)]
