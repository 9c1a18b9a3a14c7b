"""Failures with real processes: the broker restarted under publishing (accepted events are all
applied; while it is down publishing raises LogUnavailable), and the online store's Redis down
(the consumer retries without acking, is not ready, and catches up when Redis returns)."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cascade.runtime.procs import ManagedProcess, free_port
from events.contract import STREAM, Event
from events.log import EventLog, LogUnavailable
from tests.events.conftest import new_server
from tests.events.stack import (
    OnlineReader,
    Stack,
    build_store,
    delete_keys,
    expected_state,
    new_project,
    wait_for,
)

pytestmark = pytest.mark.integration

SHARED_REDIS = "redis://127.0.0.1:6379/0"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def _batch(n: int, user: int, start: int) -> list[Event]:
    t = time.time()
    return [
        Event(
            event_id=f"b{start + i}", user_id=user, item_id=i, type="view", timestamp=t + i * 1e-3
        )
        for i in range(n)
    ]


@pytest.fixture
def stack_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    return tmp_path


def test_broker_restart_under_publishing_loses_no_accepted_event(
    stack_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    try:
        redis.Redis.from_url(SHARED_REDIS, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis: {exc}")
    server = new_server(stack_home / "nats").start()
    project = new_project()
    interactions, items = build_store(stack_home, SHARED_REDIS, project, monkeypatch)
    stack = Stack(stack_home, SHARED_REDIS, server.url, project, interactions, items)
    stack.start_consumer()
    accepted: dict[int, list[Event]] = {}
    refused_while_down = 0
    accepted_while_down = 0
    down = False

    async def publisher(stop: asyncio.Event) -> None:
        nonlocal refused_while_down, accepted_while_down
        log = EventLog(partitions=4)
        await log.connect(server.url, timeout_s=2)
        k = 0
        while not stop.is_set():
            user = 2 * 10**7 + k  # one user per batch: its count says what arrived
            batch = _batch(20, user, k * 100)
            was_down = down
            try:
                await log.publish_batch(batch, timeout_s=1.0)
                accepted[user] = batch
                accepted_while_down += was_down and down
            except LogUnavailable:
                refused_while_down += down
                await asyncio.sleep(0.05)
            k += 1
            await asyncio.sleep(0.01)
        await log.close()

    async def run() -> None:
        nonlocal down
        stop = asyncio.Event()
        task = asyncio.create_task(publisher(stop))
        await asyncio.sleep(1.5)
        down = True
        server.kill()
        await asyncio.sleep(2.0)
        server.start()  # same port, same store folder
        down = False
        await asyncio.sleep(3.0)
        stop.set()
        await task
        reader = OnlineReader(stack.layout)
        try:
            want = {
                u: (20, [b.item_id for b in reversed(batch)], [b.item_id for b in reversed(batch)])
                for u, batch in accepted.items()
            }
            got = await wait_for(reader, want, timeout=60)
            assert got == want
        finally:
            await reader.close()

    try:
        asyncio.run(run())
        assert len(accepted) > 20
        assert refused_while_down > 0 and accepted_while_down == 0
        assert _status(f"http://127.0.0.1:{stack.port}/readyz") == 200
    finally:
        stack.stop()
        server.stop()
        delete_keys(SHARED_REDIS, [f"*{project}", f"cascade:events:{project}:*"])


class RedisServer:
    """A redis-server of the test's own, with an append-only file so a restart keeps data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process = self._process()

    def _process(self) -> ManagedProcess:
        return ManagedProcess(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.root),
            ],
            log_path=self.root / "redis.log",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        import redis

        self.root.mkdir(parents=True, exist_ok=True)
        self.process = self._process().start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
                return self
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError(self.process.log_tail())

    def stop(self) -> None:
        self.process.stop(grace=10)


@pytest.fixture
def own_redis(stack_home: Path) -> Iterator[RedisServer]:
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode:
        pytest.skip("redis-server not installed")
    server = RedisServer(stack_home / "redis").start()
    yield server
    server.stop()


def test_redis_down_the_consumer_retries_then_catches_up(
    stack_home: Path, own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    nats = new_server(stack_home / "nats").start()
    project = new_project()
    interactions, items = build_store(stack_home, own_redis.url, project, monkeypatch)
    stack = Stack(stack_home, own_redis.url, nats.url, project, interactions, items)
    stack.start_consumer(EVENTS_REDIS_TIMEOUT_S="0.5")
    user = int(interactions["user_id"].iloc[0])
    first = _batch(5, user, 0)
    second = _batch(7, user, 1000)

    async def run() -> None:
        log = EventLog(partitions=4)
        await log.connect(nats.url, timeout_s=2)
        reader = OnlineReader(stack.layout)
        try:
            await log.publish_batch(first, timeout_s=5)
            want = {user: expected_state(interactions, first)[user]}
            assert await wait_for(reader, want) == want
        finally:
            await reader.close()
        own_redis.stop()
        await log.publish_batch(second, timeout_s=5)  # the log takes events while Redis is down
        deadline = time.monotonic() + 30
        while _status(f"http://127.0.0.1:{stack.port}/readyz") != 503:
            assert time.monotonic() < deadline, "the consumer stayed ready without Redis"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        errors = stack.metrics()['events_apply_errors_total{stage="redis"}']
        assert errors >= 2  # retried, with backoff
        info = await log.jetstream.consumer_info(STREAM, "cascade-events")
        assert (info.num_ack_pending or 0) + (info.num_pending or 0) >= len(second)  # not acked
        own_redis.start()
        reader = OnlineReader(stack.layout)
        try:
            want = {user: expected_state(interactions, first + second)[user]}
            assert await wait_for(reader, want, timeout=60) == want
        finally:
            await reader.close()
            await log.close()
        deadline = time.monotonic() + 30
        while _status(f"http://127.0.0.1:{stack.port}/readyz") != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

    try:
        asyncio.run(run())
    finally:
        stack.stop()
        nats.stop()
