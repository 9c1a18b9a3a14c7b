"""The consumer loop: log -> exactly-once state (Redis, Lua) -> Feast online write -> offline log
-> ack.

Per fetched batch (up to ``EVENTS_BATCH`` messages of this replica's partitions):

1. decode; a message that is not an event (poison) is logged, counted and acked at once, so it
   never blocks its partition;
2. seeds for users with no state yet: their Feast row (what materialization wrote);
3. one Lua call (``events.state``): dedup by event_id, state update, CTR counters;
4. ``FeatureStore.write_to_online_store_async`` for every user with a consumption event in the
   batch, duplicates included (a crash between 3 and 4 heals on redelivery);
5. rows into the offline buffer; its messages are acked once the buffer is flushed to parquet.

Redis or the Feast write failing: the batch is retried with capped exponential backoff, its
messages kept from redelivery (``in_progress``) and never acked, ``/readyz`` answers 503; when
Redis returns the state catches up from the log. A second task stores served-answer records
(request_id -> tier, model version) for the CTR join; a third polls the consumer's lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import propagate, trace
from redis.exceptions import RedisError

from cascade.runtime import feature_names as names
from events.contract import (
    SERVED_STREAM,
    SERVED_SUBJECT_PREFIX,
    STREAM,
    SUBJECT_PREFIX,
    Event,
    ServedRecord,
    decode,
    decode_served,
)
from events.log import EventLog
from events.metrics import ConsumerMetrics
from events.offline import OfflineBuffer
from events.settings import EventsSettings
from events.state import UNKNOWN, ApplyResult, Seed, StateStore, UserState

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from cascade.runtime.feast_redis import FeastRedisReader

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("events.consumer")

T = TypeVar("T")
RETRYABLE = (RedisError, OSError, TimeoutError, RuntimeError)  # RuntimeError: uvloop transports
NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError)
IN_PROGRESS_EVERY_S = 10.0
FETCH_REST_S = 1.0  # bounds taking the messages already waiting behind the first
MAX_LINKS = 32


class Stopped(Exception):
    """The consumer was asked to stop while a batch could not be applied (left unacked)."""


FeastWrite = Callable[[list[UserState]], Awaitable[None]]


@dataclass
class Health:
    nats: bool = False
    redis: bool = True
    started: bool = False


def activity_frame(users: Sequence[UserState]) -> Any:
    """The ``user_activity`` rows of ``users`` for Feast's write (stamped ``write_us``)."""
    import pandas as pd

    return pd.DataFrame(
        {
            names.USER_JOIN_KEY: [u.user_id for u in users],
            names.EVENT_TIMESTAMP: pd.to_datetime([u.write_us for u in users], unit="us", utc=True),
            "interaction_count": [u.interaction_count for u in users],
            "recent_items": [u.recent_items for u in users],
            "seen_items": [u.seen_items for u in users],
        }
    )


class Consumer:
    """One consumer replica (see the module docstring)."""

    def __init__(
        self,
        settings: EventsSettings,
        *,
        state: StateStore,
        feast_write: FeastWrite,
        seed_reader: FeastRedisReader | None,
        offline: OfflineBuffer,
        metrics: ConsumerMetrics,
    ) -> None:
        self.settings = settings
        self.state = state
        self.feast_write = feast_write
        self.seed_reader = seed_reader
        self.offline = offline
        self.metrics = metrics
        self.log = EventLog(partitions=settings.partitions)
        self.health = Health()
        self._stopping = asyncio.Event()
        self._unacked: list[Msg] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.closers: list[Callable[[], Awaitable[None]]] = []  # run after stop (clients)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, make sure the streams and durable consumers exist, start the loops."""
        s = self.settings
        await self.log.connect(s.nats_url, timeout_s=s.connect_timeout_s, name=s.durable_name)
        await self.log.ensure_stream(
            replicas=s.stream_replicas,
            max_age_s=s.stream_max_age_s,
            duplicate_window_s=s.duplicate_window_s,
            served_max_age_s=float(s.served_ttl_s),
            max_bytes=s.stream_max_bytes,
            timeout_s=s.connect_timeout_s * 2,
        )
        js = self.log.jetstream
        owned = s.owned_partitions[0]
        self._events = await js.pull_subscribe(
            f"{SUBJECT_PREFIX}.>" if s.replicas == 1 else f"{SUBJECT_PREFIX}.{owned}",
            durable=s.durable_name,
            stream=STREAM,
            config=self._consumer_config(),
        )
        self._served = await js.pull_subscribe(
            f"{SERVED_SUBJECT_PREFIX}.>" if s.replicas == 1 else f"{SERVED_SUBJECT_PREFIX}.{owned}",
            durable=f"{s.durable_name}-served",
            stream=SERVED_STREAM,
            config=self._consumer_config(served=True),
        )
        self.health.nats = True
        self.health.started = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._events_loop(), name="events"),
            loop.create_task(self._served_loop(), name="served"),
            loop.create_task(self._lag_loop(js), name="lag"),
        ]
        logger.info(
            "consuming %s as %s (partitions %s of %d)",
            s.nats_url,
            s.durable_name,
            "all" if s.replicas == 1 else s.owned_partitions,
            s.partitions,
        )

    def _consumer_config(self, *, served: bool = False) -> ConsumerConfig:
        s = self.settings
        prefix = SERVED_SUBJECT_PREFIX if served else SUBJECT_PREFIX
        config = ConsumerConfig(
            durable_name=s.durable_name + ("-served" if served else ""),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=s.ack_wait_s,
            max_deliver=-1,  # never give up on an event: a poison message is acked by us
            max_ack_pending=s.max_ack_pending,
            max_waiting=64,
        )
        if s.replicas > 1:
            config.filter_subjects = [f"{prefix}.{p}" for p in s.owned_partitions]
        return config

    @property
    def ready(self) -> bool:
        return self.health.started and self.log.is_connected and self.health.redis

    def alive(self) -> bool:
        """False once a loop has died of an unexpected error (the process should restart)."""
        return not any(t.done() and not t.cancelled() and t.exception() for t in self._tasks)

    async def stop(self, *, timeout_s: float = 10.0) -> None:
        """Finish the batch in hand, flush the offline buffer, ack, close."""
        self._stopping.set()
        events_task = self._tasks[0] if self._tasks else None
        if events_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait({events_task}, timeout=timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._unacked and self.health.redis:
            with contextlib.suppress(OSError, Stopped, *NATS_ERRORS):
                await self._flush_offline(final=True)
        await self.log.close()

    # ---- events ----------------------------------------------------------------------------

    async def _fetch(self) -> list[Msg]:
        """The next batch: wait (up to ``fetch_wait_s``) for one message, then take what the
        log already holds behind it, up to ``batch``. nats-py's ``fetch(n)`` on an idle
        consumer waits its whole timeout for n messages; this returns as soon as one came."""
        s = self.settings
        msgs: list[Msg] = await self._events.fetch(1, timeout=s.fetch_wait_s)
        behind = min(_pending(msgs[-1]), s.batch - len(msgs))
        if behind > 0:
            with contextlib.suppress(nats.errors.TimeoutError):
                msgs += await self._events.fetch(behind, timeout=FETCH_REST_S)
        return msgs

    async def _prefetch(self, queue: asyncio.Queue[list[Msg]]) -> None:
        """Fetch the next batch while the previous one is applied (one batch ahead)."""
        while not self._stopping.is_set():
            try:
                msgs = await self._fetch()
            except nats.errors.TimeoutError:
                msgs = []
            except NATS_ERRORS as exc:
                self.health.nats = False
                logger.debug("fetch failed: %s", exc)
                await asyncio.sleep(0.2)
                continue
            self.health.nats = True
            await queue.put(msgs)

    async def _events_loop(self) -> None:
        queue: asyncio.Queue[list[Msg]] = asyncio.Queue(maxsize=1)
        fetcher = asyncio.get_running_loop().create_task(self._prefetch(queue))
        try:
            while not self._stopping.is_set() or not queue.empty():
                try:
                    msgs = await asyncio.wait_for(queue.get(), self.settings.fetch_wait_s * 2)
                except TimeoutError:
                    msgs = []
                if self._stopping.is_set():
                    fetcher.cancel()  # finish what was fetched, take nothing new
                if msgs:
                    await self.process(msgs)
                if self.offline.due(now=time.monotonic()):
                    await self._flush_offline()
        except Stopped:
            return
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher

    async def process(self, msgs: Sequence[Msg]) -> None:
        """Apply one fetched batch (see the module docstring); acks follow the offline flush."""
        started = time.monotonic()
        decoded: list[tuple[Event, Msg]] = []
        for msg in msgs:
            try:
                decoded.append((decode(msg.data), msg))
            except ValueError as exc:
                self.metrics.invalid.inc()
                logger.warning(
                    "poison message on %s (stream seq %s) acked and skipped: %s",
                    msg.subject,
                    _seq(msg),
                    str(exc).splitlines()[0][:200],
                )
                with contextlib.suppress(*NATS_ERRORS):
                    await msg.ack()
        if not decoded:
            return
        events = [e for e, _ in decoded]
        with self._span(msgs):
            seeds = await self._retry("redis", msgs, lambda: self._seeds(events))
            result = await self._retry("redis", msgs, lambda: self._apply(events, seeds))
            if result.users:
                await self._retry("feast", msgs, lambda: self._feast_write(result.users))
        self.health.redis = True
        done = time.time()
        self.metrics.applied.inc(result.applied)
        self.metrics.duplicates.inc(result.duplicates)
        for tier, version, kind in result.ctr:
            counter = self.metrics.impressions if kind == "impressions" else self.metrics.clicks
            counter.labels(tier or UNKNOWN, version or UNKNOWN).inc()
        for _, msg in decoded:
            published = _published(msg)
            if published is not None:
                self.metrics.freshness.observe(max(done - published, 0.0))
        self.metrics.last_applied.set(done)
        self.metrics.batch_duration.observe(time.monotonic() - started)
        self.offline.add([(e, _seq(m)) for e, m in decoded], now=time.monotonic())
        self._unacked.extend(m for _, m in decoded)

    async def _seeds(self, events: Sequence[Event]) -> dict[int, Seed]:
        """Feast rows of the batch's users that have no state yet (one round trip)."""
        users = list(dict.fromkeys(e.user_id for e in events if e.consumed))
        reader = self.seed_reader
        if not users or reader is None:
            return {}
        async with asyncio.timeout(self.settings.redis_timeout_s):
            rows = await self.state.feast_rows_of_new_users(
                users, [reader.key(u) for u in users], reader.fields
            )
        seeds: dict[int, Seed] = {}
        for uid, raw in rows.items():
            row = reader.decode(raw)
            if row.get("interaction_count") is not None:
                seeds[uid] = (
                    int(row["interaction_count"]),
                    list(row.get("recent_items") or []),
                    list(row.get("seen_items") or []),
                )
        return seeds

    async def _apply(self, events: Sequence[Event], seeds: dict[int, Seed]) -> ApplyResult:
        # The clients set no socket timeout (a task per read in redis-py); each call is bounded
        # as a whole instead, and a cut-off call closes its connection (redis-py).
        async with asyncio.timeout(self.settings.redis_timeout_s):
            return await self.state.apply(events, seeds=seeds, now_us=time.time_ns() // 1000)

    async def _feast_write(self, users: list[UserState]) -> None:
        async with asyncio.timeout(self.settings.redis_timeout_s * 2):
            await self.feast_write(users)

    async def _retry(self, stage: str, msgs: Sequence[Msg], op: Callable[[], Awaitable[T]]) -> T:
        """``op()`` until it succeeds: capped exponential backoff, the batch kept from
        redelivery meanwhile; :class:`Stopped` when asked to stop during the outage."""
        delay = 0.05
        last_progress = time.monotonic()
        while True:
            try:
                return await op()
            except RETRYABLE as exc:
                self.metrics.errors.labels(stage).inc()
                if self.health.redis:
                    logger.warning("%s write failed, retrying with backoff: %r", stage, exc)
                self.health.redis = False
            if self._stopping.is_set():
                raise Stopped(stage)
            if time.monotonic() - last_progress >= IN_PROGRESS_EVERY_S:
                last_progress = time.monotonic()
                for msg in msgs:
                    with contextlib.suppress(*NATS_ERRORS):
                        await msg.in_progress()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.settings.retry_max_s)

    async def _flush_offline(self, *, final: bool = False) -> None:
        """Write the buffered rows, then ack their messages."""
        if self.offline.count:
            try:
                paths = await asyncio.to_thread(self.offline.flush)
            except OSError as exc:
                self.metrics.errors.labels("offline").inc()
                logger.warning("offline log write failed, retrying later: %r", exc)
                if final:
                    raise
                return  # rows stay buffered, messages unacked; the next round retries
            self.metrics.offline_files.inc(len(paths))
        msgs, self._unacked = self._unacked, []
        for msg in msgs:
            with contextlib.suppress(*NATS_ERRORS):  # a lost ack means a redelivery: deduped
                await msg.ack()

    def _span(self, msgs: Sequence[Msg]) -> Any:
        """A span for the batch: child of the first message's trace, linked to the others."""
        contexts = []
        seen = set()
        for msg in msgs:
            parent = (msg.headers or {}).get("traceparent")
            if parent and parent not in seen:
                seen.add(parent)
                contexts.append(propagate.extract({"traceparent": parent}))
            if len(contexts) > MAX_LINKS:
                break
        links = [trace.Link(trace.get_current_span(c).get_span_context()) for c in contexts[1:]]
        return tracer.start_as_current_span(
            "events.apply",
            context=contexts[0] if contexts else None,
            links=links,
            attributes={"messaging.batch.message_count": len(msgs)},
        )

    # ---- served records and lag -----------------------------------------------------------

    async def _served_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await self._served.fetch(500, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            except NATS_ERRORS:
                await asyncio.sleep(0.5)
                continue
            records: list[ServedRecord] = []
            for msg in msgs:
                try:
                    records.append(decode_served(msg.data))
                except ValueError:
                    self.metrics.invalid.inc()
            try:
                await self._retry(
                    "served", msgs, functools.partial(self.state.store_served, records)
                )
            except Stopped:
                return
            self.metrics.served.inc(len(records))
            for msg in msgs:
                with contextlib.suppress(*NATS_ERRORS):
                    await msg.ack()

    async def _store_served(self, records: list[ServedRecord]) -> None:
        async with asyncio.timeout(self.settings.redis_timeout_s):
            await self.state.store_served(records)

    async def _lag_loop(self, js: JetStreamContext) -> None:
        while not self._stopping.is_set():
            try:
                info = await js.consumer_info(
                    STREAM, self.settings.durable_name, timeout=self.settings.connect_timeout_s
                )
                self.metrics.pending.set(info.num_pending or 0)
                self.metrics.ack_pending.set(info.num_ack_pending or 0)
            except NATS_ERRORS as exc:
                logger.debug("consumer info failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.lag_poll_s)


def _seq(msg: Msg) -> int:
    try:
        return int(msg.metadata.sequence.stream)
    except (nats.errors.Error, AttributeError, ValueError):
        return 0


def _pending(msg: Msg) -> int:
    """Messages of the consumer not yet delivered after ``msg`` (its backlog)."""
    try:
        return int(msg.metadata.num_pending)
    except (nats.errors.Error, AttributeError, ValueError):
        return 0


def _published(msg: Msg) -> float | None:
    """When the log stored the message (JetStream's timestamp), unix seconds."""
    try:
        stamp: datetime = msg.metadata.timestamp
    except (nats.errors.Error, AttributeError, ValueError):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()
