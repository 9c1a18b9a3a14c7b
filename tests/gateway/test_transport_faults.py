"""Redis connections that are accepted then reset never reach the client as a 500.

A tiny TCP server stands in for Redis (or a proxy in front of a killed one): it accepts every
connection and resets it at once (``SO_LINGER`` 0). The real ``FeastFeatureReader``, rate limiter
and breaker storage are pointed at it, on uvloop like the served process.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop

from gateway.edge.ratelimit import RateLimiter
from gateway.main import create_app
from gateway.resilience.breaker import BreakerState, CircuitBreaker, redis_storage
from gateway.tiers.features import FeastFeatureReader, FeaturesUnavailable
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import Fakes
from tests.gateway.test_api import make_settings

CLOSED_TRANSPORT = (
    "unable to perform operation on <TCPTransport closed=True reading=False 0x7f00>; "
    "the handler is closed"
)


@pytest.fixture
def reset_port() -> Iterator[int]:
    """A port whose server accepts each connection and resets it (RST, no FIN)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


class RedisBackedStore:
    """Stands in for a Feast ``FeatureStore`` on Redis: its async read is redis-py's pipeline
    HMGET, as Feast's ``RedisOnlineStore`` issues it, with the gateway's socket timeouts."""

    def __init__(self, port: int) -> None:
        import redis.asyncio as aioredis

        self.config = SimpleNamespace(online_store=SimpleNamespace(type="redis"))
        self.client = aioredis.Redis(
            host="127.0.0.1", port=port, db=1, socket_timeout=0.05, socket_connect_timeout=0.05
        )

    async def get_online_features_async(self, **_: Any) -> Any:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget("cascade:user:1", ["age_bucket"])
            await pipe.execute()
        raise AssertionError("the reset server never answers")


class RaisingStore:
    """A store whose read fails the way uvloop does for a reset connection inside ``connect()``."""

    config = SimpleNamespace(online_store=SimpleNamespace(type="redis"))

    async def get_online_features_async(self, **_: Any) -> Any:
        raise RuntimeError(CLOSED_TRANSPORT)


def test_feature_reads_against_a_resetting_redis_are_unavailable(reset_port: int) -> None:
    async def main() -> list[str]:
        store = RedisBackedStore(reset_port)
        reader = FeastFeatureReader(store)  # type: ignore[arg-type]
        outcomes = []
        for user_id in range(5):
            with pytest.raises(FeaturesUnavailable) as info:
                await reader.read(user_id, timeout_s=0.1)
            outcomes.append(info.value.code)
        await store.client.aclose()
        return outcomes

    # Failed or timed out (redis-py retries a reset connection with backoff): never a raw error.
    assert set(uvloop.run(main())) == {"features_unavailable"}


def test_runtime_error_from_the_transport_is_unavailable() -> None:
    reader = FeastFeatureReader(RaisingStore())  # type: ignore[arg-type]
    with pytest.raises(FeaturesUnavailable, match="TCPTransport closed=True"):
        uvloop.run(reader.read(1, timeout_s=0.05))


def test_gateway_answers_200_features_unavailable_on_a_reset() -> None:
    fakes = Fakes()
    fakes.features = FeastFeatureReader(RaisingStore())  # type: ignore[assignment]
    with AppClient(create_app(make_settings(), components=fakes.factory)) as client:
        response = client.get("/v1/recommendations/1?k=5")
    assert response.status_code == 200
    body = response.json()
    assert body["fallback_reason"] == "features_unavailable"
    assert body["served_by"] == "als"
    assert len(body["items"]) == 5


def test_read_gives_up_at_the_timeout_even_if_cleanup_is_slow() -> None:
    class SlowToCancel:
        config = SimpleNamespace(online_store=SimpleNamespace(type="redis"))

        async def get_online_features_async(self, **_: Any) -> Any:
            try:
                await asyncio.sleep(10)
            finally:  # redis-py closing its connection against a frozen Redis
                await asyncio.shield(asyncio.sleep(0.2))

    async def main() -> float:
        reader = FeastFeatureReader(SlowToCancel())  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(FeaturesUnavailable, match="timed out"):
            await reader.read(1, timeout_s=0.02)
        elapsed = loop.time() - started
        await asyncio.sleep(0.25)  # let the abandoned read finish its cleanup
        return elapsed

    assert uvloop.run(main()) < 0.015 + 0.02


def test_rate_limiter_falls_back_on_a_resetting_redis(reset_port: int) -> None:
    errors: list[BaseException] = []

    async def main() -> list[str]:
        limiter = RateLimiter.from_url(
            f"redis://127.0.0.1:{reset_port}/0",
            timeout_s=0.05,
            retry_redis_s=0.0,
            on_redis_error=errors.append,
        )
        backends = [(await limiter.check("k1", rate=10, burst=10)).backend for _ in range(10)]
        await limiter.close()
        return backends

    assert uvloop.run(main()) == ["local"] * 10
    assert errors


def test_rate_limiter_falls_back_on_a_runtime_error() -> None:
    class Broken:
        async def script_load(self, _: str) -> str:
            raise RuntimeError(CLOSED_TRANSPORT)

        async def aclose(self) -> None:
            return None

    decision = uvloop.run(
        RateLimiter(redis=Broken()).check("k1", rate=10, burst=10)  # type: ignore[arg-type]
    )
    assert decision.allowed and decision.backend == "local"


def test_breaker_shared_storage_on_a_resetting_redis(reset_port: int) -> None:
    storage = redis_storage(
        url=f"redis://127.0.0.1:{reset_port}/0", namespace="t", timeout_seconds=0.05
    )
    breaker = CircuitBreaker(storage=storage, shared_sync_seconds=0.0)
    permit = breaker.try_acquire()
    assert permit is not None
    breaker.record(permit, duration=0.001, ok=False)
    breaker.force_open()  # written to the (unreachable) shared storage: logged, not raised
    # Unreadable shared state: the breaker keeps its own (open) state.
    assert breaker.state == BreakerState.OPEN
    breaker.reset()
    assert breaker.try_acquire() is not None
