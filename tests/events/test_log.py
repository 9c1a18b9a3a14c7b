"""The event log against a real nats-server: acked publishes, per-user subjects, dedup by
event id, trace headers, served records, and LogUnavailable when the broker is gone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from events.contract import MSG_ID_HEADER, STREAM, Event, ServedRecord, decode, decode_served
from events.log import EventLog, LogUnavailable
from events.natsd import NatsServer
from tests.events.conftest import new_server

pytestmark = pytest.mark.integration


def events(n: int, *, start: int = 0, user: int | None = None) -> list[Event]:
    now = time.time()
    return [
        Event(
            event_id=f"ev-{i}",
            user_id=i % 7 if user is None else user,
            item_id=i,
            type="view",
            timestamp=now,
        )
        for i in range(start, start + n)
    ]


async def _read_all(log: EventLog, subject: str, n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    sub = await log.jetstream.pull_subscribe(subject, durable=None)
    out: list[tuple[str, bytes, dict[str, str]]] = []
    while len(out) < n:
        for msg in await sub.fetch(n - len(out), timeout=2):
            out.append((msg.subject, msg.data, dict(msg.headers or {})))
            await msg.ack()
    await sub.unsubscribe()
    return out


def test_publish_batch_stores_every_event_once_on_its_users_subject(
    nats_server: NatsServer,
) -> None:
    async def run() -> None:
        log = EventLog(partitions=4)
        await log.connect(nats_server.url, timeout_s=2)
        await log.ensure_stream()
        await log.ensure_stream()  # idempotent
        batch = events(300)
        await log.publish_batch(
            batch, headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}, timeout_s=5
        )
        await log.publish_batch(batch[:100], timeout_s=5)  # a client retry: deduplicated
        info = await log.jetstream.stream_info(STREAM)
        assert info.state.messages == 300
        got = await _read_all(log, "cascade.events.>", 300)
        for subject, data, headers in got:
            event = decode(data)
            assert subject == f"cascade.events.{event.user_id % 4}"
            assert headers[MSG_ID_HEADER] == event.event_id
            assert headers["traceparent"].startswith("00-aaaa")
        assert sorted(decode(d).event_id for _, d, _ in got) == sorted(e.event_id for e in batch)
        await log.jetstream.delete_stream(STREAM)
        await log.close()

    asyncio.run(run())


def test_served_records_are_published_without_waiting(nats_server: NatsServer) -> None:
    async def run() -> None:
        log = EventLog(partitions=2)
        await log.connect(nats_server.url, timeout_s=2)
        await log.ensure_stream()
        record = ServedRecord(
            request_id="r-1",
            user_id=5,
            tier="als",
            model_version="v1",
            ts=time.time(),
            item_ids=[1],
        )
        assert log.publish_served(record) is True
        got = await _read_all(log, "cascade.served.>", 1)
        assert got[0][0] == "cascade.served.1" and decode_served(got[0][1]) == record
        await log.close()
        assert log.publish_served(record) is False  # closed: dropped, never raises

    asyncio.run(run())


def test_no_broker_means_log_unavailable(tmp_path: Path) -> None:
    server = new_server(tmp_path).start()

    async def run() -> None:
        log = EventLog(partitions=2)
        await log.connect(server.url, timeout_s=2)
        await log.ensure_stream()
        await log.publish_batch(events(5), timeout_s=2)
        server.kill()
        for _ in range(100):  # the client notices the dead socket
            if not log.is_connected:
                break
            try:
                await log.publish_batch(events(5, start=100), timeout_s=0.5)
            except LogUnavailable:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(LogUnavailable):
            await log.publish_batch(events(5, start=200), timeout_s=0.5)
        record = ServedRecord(request_id="r", user_id=1, tier="als", model_version="v", ts=1.0)
        assert log.publish_served(record) is False
        # the broker comes back on the same store: the client reconnects, the log is intact
        server.start()
        for _ in range(100):
            if log.is_connected:
                break
            await asyncio.sleep(0.1)
        await log.publish_batch(events(5, start=300), timeout_s=5)
        info = await log.jetstream.stream_info(STREAM)
        assert info.state.messages >= 10
        await log.close()

    try:
        asyncio.run(run())
    finally:
        server.stop()


def test_connect_to_nothing_is_log_unavailable() -> None:
    from cascade.runtime.procs import free_port

    async def run() -> None:
        log = EventLog()
        with pytest.raises(LogUnavailable):
            await log.connect(f"nats://127.0.0.1:{free_port()}", timeout_s=0.5)
        with pytest.raises(LogUnavailable):
            await log.publish_batch(events(1), timeout_s=0.5)

    asyncio.run(run())
