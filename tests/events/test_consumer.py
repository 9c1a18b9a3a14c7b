"""End to end with real processes: EventLog -> nats-server -> ``python -m events`` -> Feast's
Redis online store, read back with the gateway's reader; the offline log; poison messages;
kill -9 mid-batch with an exact replay check."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import pytest

from cascade.data.event_log import read_event_log
from events.contract import EVENTS_DIR, Event
from events.log import EventLog
from events.natsd import NatsServer
from tests.events.stack import (
    DATASET,
    OnlineReader,
    Stack,
    build_store,
    delete_keys,
    expected_state,
    new_project,
    wait_for,
)

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def stack(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("home")
    project = new_project()
    mp.setenv("CASCADE_HOME", str(home))
    interactions, items = build_store(home, REDIS_URL, project, mp)
    s = Stack(home, REDIS_URL, nats_server.url, project, interactions, items)
    s.start_consumer()
    try:
        yield s
    finally:
        s.stop()
        delete_keys(REDIS_URL, [f"*{project}", f"cascade:events:{project}:*"])
        mp.undo()


def _event(i: int, user: int, item: int, kind: str = "click", **over: object) -> Event:
    fields: dict[str, object] = {
        "event_id": f"t{i}",
        "user_id": user,
        "item_id": item,
        "type": kind,
        "timestamp": time.time(),
    }
    fields.update(over)
    return Event.model_validate(fields)


async def _publish(stack: Stack, events: list[Event], *, batch: int = 100) -> None:
    log = EventLog(partitions=4)
    await log.connect(stack.nats_url, timeout_s=2)
    try:
        for i in range(0, len(events), batch):
            await log.publish_batch(events[i : i + batch], timeout_s=10)
    finally:
        await log.close()


def test_events_reach_the_gateways_read_and_the_offline_log(stack: Stack) -> None:
    users = stack.interactions["user_id"].drop_duplicates().to_numpy()[:3]
    old, other, _ = (int(u) for u in users)
    new_user = 10**6 + 7
    item = [int(i) for i in stack.items[:10]]
    t = time.time()
    events = [
        _event(1, old, item[1], "click", timestamp=t),
        _event(2, old, item[2], "impression", timestamp=t + 0.001),  # not history
        _event(3, old, item[3], "view", timestamp=t - 0.5),  # out of order: older than t1
        _event(4, old, item[4], "rating", value=2.0, timestamp=t + 0.002),  # low: not history
        _event(5, other, item[5], "purchase", timestamp=t),
        _event(6, new_user, item[6], "view", timestamp=t),  # a new user becomes known
        _event(7, new_user, 10**9, "click", timestamp=t + 0.003),  # an unknown item
        _event(8, old, item[7], "rating", value=5.0, timestamp=t + 0.004),
    ]

    async def run() -> None:
        reader = OnlineReader(stack.layout)
        try:
            await _publish(stack, events)
            await _publish(stack, events[:3])  # a client retry: no effect
            want = expected_state(stack.interactions, events)
            want_users = {u: want[u] for u in (old, other, new_user)}
            got = await wait_for(reader, want_users)
            assert got == want_users
            assert got[old][1][:3] == [item[7], item[1], item[3]]
            assert got[new_user] == (2, [10**9, item[6]], [10**9, item[6]])
        finally:
            await reader.close()

    asyncio.run(run())
    log_dir = stack.layout.dataset_dir(DATASET) / EVENTS_DIR
    deadline = time.monotonic() + 20
    log = read_event_log(log_dir)
    while len(log) < len(events) and time.monotonic() < deadline:
        time.sleep(0.2)
        log = read_event_log(log_dir)
    assert set(log["event_id"]) >= {e.event_id for e in events}
    assert log["event_id"].is_unique
    m = stack.metrics()
    # the retried publish never reached the consumer: the stream's Nats-Msg-Id window took it
    assert m["events_applied_total"] == 8
    assert m["events_freshness_seconds_count"] >= 8
    assert m['events_apply_errors_total{stage="redis"}'] == 0


def test_poison_messages_are_acked_and_skipped(stack: Stack) -> None:
    before = stack.metrics()["events_invalid_total"]
    user = 10**6 + 99

    async def run() -> None:
        log = EventLog(partitions=4)
        await log.connect(stack.nats_url, timeout_s=2)
        for bad in (b"not json", b'{"event_id": "x"}', b"[1,2]"):
            await log.jetstream.publish(f"cascade.events.{user % 4}", bad, timeout=5)
        await log.close()
        await _publish(stack, [_event(100, user, int(stack.items[0]), "view")])
        reader = OnlineReader(stack.layout)
        try:
            got = await wait_for(reader, {user: (1, [int(stack.items[0])], [int(stack.items[0])])})
            assert got[user][0] == 1  # the partition was not blocked
        finally:
            await reader.close()

    asyncio.run(run())
    assert stack.metrics()["events_invalid_total"] == before + 3


def test_kill_9_mid_batch_then_restart_applies_every_event_exactly_once(stack: Stack) -> None:
    rng = random.Random(5)
    users = [10**7 + u for u in range(40)]
    t = time.time()
    events = [
        _event(
            10_000 + i,
            rng.choice(users),
            rng.randrange(60),
            rng.choice(["click", "view", "impression"]),
            timestamp=t + rng.randrange(500) * 0.01,
        )
        for i in range(6000)
    ]

    async def run() -> None:
        await _publish(stack, events[:3000], batch=500)
        publish = asyncio.create_task(_publish(stack, events[3000:], batch=500))
        # kill it while batches are in flight
        deadline = time.monotonic() + 30
        while stack.metrics()["events_applied_total"] < 1000 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert stack.consumer is not None
        stack.consumer.kill()
        await publish
        stack.start_consumer()
        reader = OnlineReader(stack.layout)
        try:
            want = expected_state(stack.interactions, events)
            want_users = {u: want[u] for u in users if u in want}
            got = await wait_for(reader, want_users, timeout=60)
            assert got == want_users  # counts equal a replay of the log: nothing twice
            # applied-but-unacked messages come again (after the ack wait) and are skipped
            deadline = time.monotonic() + 30
            while stack.metrics()["events_duplicates_total"] == 0:
                assert time.monotonic() < deadline, "no redelivery after the crash"
                await asyncio.sleep(0.2)
            assert await wait_for(reader, want_users) == want_users
        finally:
            await reader.close()

    asyncio.run(run())


def test_sigterm_finishes_acks_and_exits_0(stack: Stack) -> None:
    user = 10**6 + 555
    items = [int(i) for i in stack.items[:30]]
    events = [
        _event(50_000 + i, user, item, "view", timestamp=time.time() + i * 1e-3)
        for i, item in enumerate(items)
    ]

    async def run() -> None:
        await _publish(stack, events)
        reader = OnlineReader(stack.layout)
        try:
            want = expected_state(stack.interactions, events)
            assert await wait_for(reader, {user: want[user]}) == {user: want[user]}
        finally:
            await reader.close()

    asyncio.run(run())
    assert stack.consumer is not None
    assert stack.consumer.stop(grace=15) == 0
    assert "Traceback" not in stack.consumer.log_tail(200)
    # what it applied was written to the offline log before it acked and left
    log = read_event_log(stack.layout.dataset_dir(DATASET) / EVENTS_DIR)
    assert {e.event_id for e in events} <= set(log["event_id"])
