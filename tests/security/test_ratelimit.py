"""Token buckets: the per-process fallback with an injected clock (no sleeps), the Redis script
against the real Redis (shared by two limiters = two replicas), and the fallback when Redis is
down (refused connection) or frozen (a listener that never answers)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from gateway.edge.ratelimit import Decision, LocalBuckets, RateLimiter

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_local_bucket_burst_then_rate() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock=clock)
    got = [buckets.take("k", rate=2, burst=3).allowed for _ in range(4)]
    assert got == [True, True, True, False]
    refused = buckets.take("k", rate=2, burst=3)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.5)
    assert refused.retry_after_header == "1"
    clock.now += 0.5
    assert buckets.take("k", rate=2, burst=3).allowed
    assert not buckets.take("k", rate=2, burst=3).allowed
    clock.now += 100  # refills up to the burst, not beyond
    assert [buckets.take("k", rate=2, burst=3).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert buckets.take("other", rate=2, burst=3).allowed  # buckets are per key


def test_local_buckets_bounded() -> None:
    buckets = LocalBuckets(clock=Clock(), max_keys=10)
    for i in range(50):
        buckets.take(f"k{i}", rate=1, burst=1)
    assert len(buckets._buckets) == 10


def test_retry_after_header_rounds_up() -> None:
    assert Decision(False, 2.01, 0, "local").retry_after_header == "3"
    assert Decision(False, 0.001, 0, "local").retry_after_header == "1"


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.mark.skipif(not _redis_up(), reason="no Redis at 127.0.0.1:6379")
def test_redis_buckets_shared_by_two_replicas(loop: asyncio.AbstractEventLoop) -> None:
    prefix = f"test:rl:{uuid.uuid4().hex}:"

    async def run() -> list[Decision]:
        a = RateLimiter.from_url(REDIS_URL, prefix=prefix, timeout_s=0.5)
        b = RateLimiter.from_url(REDIS_URL, prefix=prefix, timeout_s=0.5)
        try:
            out = []
            for i in range(6):  # alternate replicas: one bucket of 4 between them
                out.append(await (a if i % 2 == 0 else b).check("key1", rate=0.1, burst=4))
            a._sha = "0" * 40  # as after a Redis restart: the script cache is empty
            out.append(await a.check("key2", rate=0.1, burst=4))
            ttl = await a.redis.pttl(prefix + "key1")
            assert 0 < ttl <= 41_000
            return out
        finally:
            await a.close()
            await b.close()

    decisions = loop.run_until_complete(run())
    assert [d.allowed for d in decisions] == [True, True, True, True, False, False, True]
    assert {d.backend for d in decisions} == {"redis"}
    assert decisions[4].retry_after_s == pytest.approx(10, abs=1)


def test_redis_refused_falls_back_without_failing(loop: asyncio.AbstractEventLoop) -> None:
    from cascade.runtime.procs import free_port

    errors: list[BaseException] = []
    clock = Clock()

    async def run() -> list[Decision]:
        limiter = RateLimiter.from_url(
            f"redis://127.0.0.1:{free_port()}/0",
            timeout_s=0.02,
            clock=clock,
            on_redis_error=errors.append,
        )
        try:
            out = [await limiter.check("k", rate=1, burst=2) for _ in range(3)]
            assert not limiter.redis_healthy
            clock.now += 1.5  # after retry_redis_s the limiter tries Redis again
            out.append(await limiter.check("k", rate=1, burst=2))
            return out
        finally:
            await limiter.close()

    decisions = loop.run_until_complete(run())
    assert [d.backend for d in decisions] == ["local"] * 4
    assert [d.allowed for d in decisions] == [True, True, False, True]
    assert len(errors) == 2  # one failed attempt per retry period, not one per request


def test_frozen_redis_costs_one_socket_timeout(loop: asyncio.AbstractEventLoop) -> None:
    """A listener that accepts and never answers stands in for a SIGSTOPped Redis."""

    async def run() -> tuple[list[Decision], float]:
        writers: list[asyncio.StreamWriter] = []

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)  # read nothing, answer nothing

        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        limiter = RateLimiter.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.03)
        try:
            started = time.perf_counter()
            out = [await limiter.check("k", rate=100, burst=100) for _ in range(20)]
            return out, time.perf_counter() - started
        finally:
            await limiter.close()
            for writer in writers:
                writer.close()
            server.close()
            await server.wait_closed()

    decisions, _elapsed = loop.run_until_complete(run())
    assert all(d.allowed and d.backend == "local" for d in decisions)


@pytest.mark.parametrize(("replicas", "within_limit"), [(2, True), (1, False)])
def test_two_replicas_with_redis_down_hold_one_key_to_its_rate(
    loop: asyncio.AbstractEventLoop, replicas: int, within_limit: bool
) -> None:
    """Issue 20, item 5: the rate-limit Redis is down (refused connections), one key sends at
    twice its rate for 10 s, spread over two replicas (two limiters, alternating). With
    ``GATEWAY_RATE_LIMIT_REPLICAS=2`` each replica's fallback bucket is half the key's, so the
    total allowed stays within what one shared bucket allows: ``rate x 10 s + burst``, plus a
    stated margin of one token per replica (rounding of the split burst). With the old behaviour
    (``replicas=1``: each replica the full rate) the same traffic gets nearly twice that."""
    from cascade.runtime.procs import free_port

    rate, burst, seconds, step = 10.0, 10, 10.0, 1 / 20  # 20 req/s = 2x the rate
    clock = Clock()
    errors: list[BaseException] = []
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    async def run() -> int:
        limiters = [
            RateLimiter.from_url(
                url, timeout_s=0.02, clock=clock, on_redis_error=errors.append, replicas=replicas
            )
            for _ in range(2)
        ]
        allowed = 0
        try:
            for n in range(int(seconds / step)):
                decision = await limiters[n % 2].check("key", rate=rate, burst=burst)
                assert decision.backend == "local"
                allowed += decision.allowed
                clock.now += step
        finally:
            for limiter in limiters:
                await limiter.close()
        return allowed

    allowed = loop.run_until_complete(run())
    budget = rate * seconds + burst
    margin = 2  # one token per replica
    if within_limit:
        assert budget * 0.9 <= allowed <= budget + margin, allowed
    else:
        assert allowed > 1.5 * budget, allowed  # what the hint prevents
    assert len(errors) >= 2 * 9  # every replica kept retrying Redis about once a second


def test_the_fallback_share_never_rounds_a_bucket_to_zero(
    loop: asyncio.AbstractEventLoop,
) -> None:
    limiter = RateLimiter(redis=object(), replicas=24)
    limiter._redis_down_until = float("inf")  # Redis known down: straight to the local share
    decision = loop.run_until_complete(limiter.check("k", rate=5, burst=3))
    assert decision.allowed and decision.backend == "local"
    with pytest.raises(ValueError):
        RateLimiter(replicas=0)
