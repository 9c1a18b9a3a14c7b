"""The durable event log: NATS JetStream through nats-py, as the gateway and the consumer use it.

- :meth:`EventLog.publish_batch` publishes every event of a batch at once (JetStream's async
  publish: one ack future per message), with ``Nats-Msg-Id`` = ``event_id`` (the stream drops a
  repeat of an id within its duplicate window), and returns only when every message is acked,
  i.e. stored on disk (on a quorum of replicas with R3). Anything else is
  :class:`LogUnavailable`: not connected, an ack not back within the timeout, a stream error. The
  gateway answers 503 + ``Retry-After`` then; a client that retries with the same event ids gets
  no duplicates (the stream's window, then the consumer's ``event_id`` dedup).
- :meth:`EventLog.publish_served` hands a served-answer record to a bounded queue that one task
  drains with core (un-acked) publishes: it never waits, and drops (returns False) when the
  connection is down or the queue is full. These records only feed the CTR join.
- Reconnects are nats-py's: a bounded wait between attempts, attempts without end (a service
  outlives a broker restart). While reconnecting ``is_connected`` is False.

Every network call has a timeout. Imports nats-py, opentelemetry and the contract only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from opentelemetry import propagate

from events.contract import (
    MSG_ID_HEADER,
    SERVED_STREAM,
    SERVED_SUBJECT_PREFIX,
    STREAM,
    SUBJECT_PREFIX,
    Event,
    ServedRecord,
    encode,
    encode_served,
    partitions_from_env,
    served_subject_for,
    subject_for,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_AGE_S = 7 * 86_400.0  # how long the log keeps events the consumer has not read
DEFAULT_SERVED_MAX_AGE_S = 3_600.0
DEFAULT_DUPLICATE_WINDOW_S = 120.0
RECONNECT_WAIT_S = 0.5
ERROR_LOG_EVERY_S = 30.0
SERVED_QUEUE = 10_000  # served records waiting to be sent; beyond this they are dropped
MAX_ASYNC_PENDING = 20_000  # JetStream publishes awaiting their ack, whole process

NatsError = (nats.errors.Error, nats.js.errors.Error, OSError, asyncio.TimeoutError)


class LogUnavailable(Exception):
    """The log did not take the batch (down, not connected, no ack in time): answer 503."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None


def trace_headers() -> dict[str, str]:
    """The current span's W3C trace context (``traceparent``, ``tracestate``) as message headers;
    empty outside a span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class EventLog:
    """A connection to the log (see the module docstring). One per process."""

    def __init__(self, *, partitions: int | None = None, served_queue: int = SERVED_QUEUE) -> None:
        self.partitions = partitions or partitions_from_env()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._served: asyncio.Queue[ServedRecord] = asyncio.Queue(maxsize=served_queue)
        self._sender: asyncio.Task[None] | None = None
        self.served_dropped = 0
        self._closing = False

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def client(self) -> Client:
        if self._nc is None:
            raise LogUnavailable("not connected to the log")
        return self._nc

    @property
    def jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise LogUnavailable("not connected to the log")
        return self._js

    async def connect(self, url: str, *, timeout_s: float = 2.0, name: str = "cascade") -> None:
        """Connect to ``url`` (``nats://host:port``, comma-separated for a cluster). Raises
        :class:`LogUnavailable` when no server answers within ``timeout_s``."""

        last_warning = [0.0]

        async def on_error(exc: Exception) -> None:
            # nats-py reports every failed reconnect (two a second while the broker is down)
            now = asyncio.get_running_loop().time()
            if now - last_warning[0] >= ERROR_LOG_EVERY_S:
                last_warning[0] = now
                logger.warning("event log connection error: %s", exc)

        async def on_disconnect() -> None:
            if not self._closing:
                logger.warning("event log disconnected; reconnecting")

        async def on_reconnect() -> None:
            logger.info("event log reconnected")

        nc = Client()
        try:
            # nats-py retries the first connect as often as a reconnect (forever here), so the
            # first connect is bounded by the timeout as a whole.
            async with asyncio.timeout(timeout_s):
                await nc.connect(
                    servers=[s.strip() for s in url.split(",") if s.strip()],
                    name=name,
                    connect_timeout=timeout_s,  # type: ignore[arg-type]  # a float works
                    reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,  # forever, RECONNECT_WAIT_S apart
                    allow_reconnect=True,
                    ping_interval=5,  # a dead server is noticed within ~10 s
                    max_outstanding_pings=2,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                )
        except NatsError as exc:
            with contextlib.suppress(*NatsError):
                await asyncio.wait_for(nc.close(), timeout_s)
            raise LogUnavailable(f"cannot reach the event log at {url}: {exc!r}") from exc
        self._nc = nc
        self._js = self._nc.jetstream(
            timeout=timeout_s, publish_async_max_pending=MAX_ASYNC_PENDING
        )
        self._sender = asyncio.get_running_loop().create_task(self._send_served())

    async def ensure_stream(
        self,
        *,
        replicas: int | None = None,
        max_age_s: float | None = None,
        duplicate_window_s: float | None = None,
        served_max_age_s: float | None = None,
        max_bytes: int | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        """Create (or update) the events stream and the served-answers stream.

        Events: file storage, ``replicas`` copies (3 in a production cluster), kept
        ``max_age_s``; with ``max_bytes`` set a full stream refuses new events (``discard
        new``: the publisher gets a 503) rather than dropping unread ones. Served records: file
        storage, kept ``served_max_age_s``, oldest dropped first (they only feed metrics).
        A value not given comes from the consumer's variables (``EVENTS_STREAM_REPLICAS``,
        ``EVENTS_STREAM_MAX_AGE_S``, ``EVENTS_DUPLICATE_WINDOW_S``, ``EVENTS_SERVED_TTL_S``,
        ``EVENTS_STREAM_MAX_BYTES``), so the gateway and the consumer ask for the same streams.
        """
        replicas = replicas or int(_env_number("EVENTS_STREAM_REPLICAS", 1))
        max_age_s = max_age_s or _env_number("EVENTS_STREAM_MAX_AGE_S", DEFAULT_MAX_AGE_S)
        duplicate_window_s = duplicate_window_s or _env_number(
            "EVENTS_DUPLICATE_WINDOW_S", DEFAULT_DUPLICATE_WINDOW_S
        )
        served_max_age_s = served_max_age_s or _env_number(
            "EVENTS_SERVED_TTL_S", DEFAULT_SERVED_MAX_AGE_S
        )
        if max_bytes is None:
            max_bytes = int(_env_number("EVENTS_STREAM_MAX_BYTES", -1))
        events = StreamConfig(
            name=STREAM,
            subjects=[f"{SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=max_age_s,
            max_bytes=max_bytes,
            discard=DiscardPolicy.NEW,
            duplicate_window=duplicate_window_s,
        )
        served = StreamConfig(
            name=SERVED_STREAM,
            subjects=[f"{SERVED_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=served_max_age_s,
            discard=DiscardPolicy.OLD,
            duplicate_window=min(duplicate_window_s, served_max_age_s),
        )
        for config in (events, served):
            await asyncio.wait_for(self._upsert(config), timeout_s)

    async def _upsert(self, config: StreamConfig) -> None:
        js = self.jetstream
        try:
            await js.stream_info(str(config.name))
        except nats.js.errors.NotFoundError:
            await js.add_stream(config)
            logger.info("created stream %s", config.name)
            return
        try:
            await js.update_stream(config)
        except nats.js.errors.APIError as exc:  # e.g. a replica count the cluster cannot change
            logger.warning("stream %s kept its config: %s", config.name, exc)

    async def publish_batch(
        self,
        events: Sequence[Event],
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        """Publish ``events`` and wait until the log has stored every one of them.

        ``headers`` (e.g. :func:`trace_headers`) go on every message besides ``Nats-Msg-Id``.
        Raises :class:`LogUnavailable` unless all acks came back within ``timeout_s``; some
        events may then be stored already (a retry with the same ids is deduplicated).
        """
        if not events:
            return
        if not self.is_connected:
            raise LogUnavailable("not connected to the event log")
        js = self.jetstream
        base = dict(headers or {})
        futures: list[asyncio.Future[Any]] = []
        try:
            # One timeout for the whole batch, none per publish: a stall timeout makes nats-py
            # wait on a task for every message, yielding to the loop so that the flusher writes
            # each message in its own send() (80-135 µs of CPU per event in the gateway, against
            # ~35 µs when the batch goes out in one write). The pending window (MAX_ASYNC_PENDING)
            # can still stall a publish; the timeout bounds that too.
            async with asyncio.timeout(timeout_s):
                for event in events:
                    futures.append(
                        await js.publish_async(
                            subject_for(event.user_id, self.partitions),
                            encode(event),
                            headers={**base, MSG_ID_HEADER: event.event_id},
                        )
                    )
                await asyncio.gather(*futures)
        except TimeoutError as exc:
            raise LogUnavailable(f"the event log did not ack within {timeout_s:g} s") from exc
        except NatsError as exc:
            raise LogUnavailable(f"the event log refused the batch: {exc!r}") from exc
        finally:
            for f in futures:  # releases nats-py's pending slots of unanswered publishes
                if not f.done():
                    f.cancel()

    def publish_served(self, record: ServedRecord) -> bool:
        """Queue a served-answer record for sending; never waits. False (dropped) when the log
        is not connected or the queue is full."""
        if not self.is_connected:
            self.served_dropped += 1
            return False
        try:
            self._served.put_nowait(record)
        except asyncio.QueueFull:
            self.served_dropped += 1
            return False
        return True

    async def _send_served(self) -> None:
        while True:
            record = await self._served.get()
            nc = self._nc
            if nc is None or not nc.is_connected:
                self.served_dropped += 1
                continue
            try:
                await nc.publish(
                    served_subject_for(record.user_id, self.partitions), encode_served(record)
                )
            except NatsError as exc:
                self.served_dropped += 1
                logger.debug("served record dropped: %s", exc)

    async def close(self, *, timeout_s: float = 2.0) -> None:
        """Send what is queued (within ``timeout_s``), then close the connection."""
        self._closing = True
        if self._sender is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    while not self._served.empty() and self.is_connected:
                        await asyncio.sleep(0.01)
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(*NatsError):
                async with asyncio.timeout(timeout_s):
                    await self._nc.flush(timeout=max(int(timeout_s), 1))
            with contextlib.suppress(*NatsError):
                async with asyncio.timeout(timeout_s):
                    await self._nc.close()
        self._nc = None
        self._js = None
