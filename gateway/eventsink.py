"""The gateway's side of the event log: one connection for ``POST /v1/events`` and the served
records, opened in the background so the log never gates the recommendations.

- ``GATEWAY_EVENTS_NATS_URL`` empty: the sink is *disabled*; the events route answers 503
  ``events_disabled`` and no served record is published (nothing counts as dropped).
- Otherwise :meth:`EventSink.run` (a lifespan task) connects, retrying with a backoff of
  0.5 s doubling to 5 s, each attempt bounded by ``GATEWAY_EVENTS_CONNECT_TIMEOUT_MS``, then
  creates the streams if they are missing (the consumer's ``EVENTS_STREAM_*`` settings, which
  both must share). Once connected, nats-py reconnects by itself after a broker restart. The gateway is ready meanwhile:
  ``/readyz`` reports ``event_log: connected | connecting | disabled`` as a non-fatal check.
- :meth:`EventSink.served` hands a served answer to the log's bounded queue and returns at once
  (``events.log.EventLog.publish_served``); a record the log could not take is counted in
  ``gateway_served_records_dropped_total``, read from the log's own counter at scrape time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cascade.runtime.redact import redact_url
from events.contract import ServedRecord
from events.log import EventLog, LogUnavailable, NatsError
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

CONNECT_BACKOFF_S = (0.5, 5.0)  # first wait after a failed attempt, the longest wait


class EventSink:
    """The event log as the gateway uses it (see the module docstring)."""

    def __init__(self, settings: GatewaySettings, *, log: EventLog | None = None) -> None:
        self.url = settings.events_nats_url
        self.connect_timeout_s = settings.events_connect_timeout_ms / 1000
        self.publish_timeout_s = settings.events_publish_timeout_ms / 1000
        self.publish_served = settings.events_served_records
        self.log: EventLog | None = None
        if self.url:
            self.log = log or EventLog(partitions=settings.events_partitions)
        self.attempts = 0

    @property
    def enabled(self) -> bool:
        return self.log is not None

    @property
    def state(self) -> str:
        """``disabled``, ``connected`` or ``connecting`` (first attempt pending, or reconnecting)."""
        if self.log is None:
            return "disabled"
        return "connected" if self.log.is_connected else "connecting"

    async def run(self) -> None:
        """Connect, retrying until it works (a lifespan task; cancelled at shutdown)."""
        if self.log is None:
            return
        wait, longest = CONNECT_BACKOFF_S
        while True:
            self.attempts += 1
            try:
                await self.log.connect(
                    self.url, timeout_s=self.connect_timeout_s, name="cascade-gateway"
                )
            except LogUnavailable as exc:
                if self.attempts == 1 or self.attempts % 20 == 0:
                    logger.warning(
                        "event log not reachable (attempt %d, retrying): %s",
                        self.attempts,
                        redact_url(exc.reason),
                    )
                await asyncio.sleep(wait)
                wait = min(longest, wait * 2)
                continue
            logger.info("event log connected: %s", redact_url(self.url))
            break
        await self._ensure_streams(wait, longest)

    async def _ensure_streams(self, wait: float, longest: float) -> None:
        """Create the streams if they are missing, as the consumer does at its start (same
        ``EVENTS_STREAM_*`` settings: ``EventLog.ensure_stream``), so a gateway whose consumer
        has not started yet (or is not run: ``cascade up`` on SQLite) still stores events."""
        assert self.log is not None
        while True:
            try:
                await self.log.ensure_stream()
                return
            except (LogUnavailable, *NatsError) as exc:  # retried: publishing needs no more
                logger.warning("event log streams not ensured (retrying): %r", exc)
            await asyncio.sleep(wait)
            wait = min(longest, wait * 2)

    def served(
        self,
        *,
        request_id: str,
        user_id: int,
        tier: str,
        model_version: str,
        item_ids: Sequence[int],
    ) -> None:
        """Queue one served answer for the CTR join; never waits, never raises."""
        if self.log is None or not self.publish_served:
            return
        # model_construct: the gateway's own values (request ids match the contract's pattern,
        # ids are validated answers); full validation cost ~10 us per request on the hot path.
        record = ServedRecord.model_construct(
            request_id=request_id,
            user_id=user_id,
            tier=tier,
            model_version=model_version or "unknown",
            ts=time.time(),
            item_ids=list(item_ids),
        )
        self.log.publish_served(record)

    async def close(self) -> None:
        if self.log is not None:
            await self.log.close(timeout_s=2.0)


class SinkCollector(Collector):
    """``gateway_served_records_dropped_total`` and ``gateway_event_log_connected``, read from
    the sink when Prometheus scrapes (the log keeps the drop count itself)."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        log = self.sink.log
        yield CounterMetricFamily(
            "gateway_served_records_dropped",
            "Served-answer records not sent to the event log (log down or queue full)",
            value=log.served_dropped if log is not None else 0,
        )
        yield GaugeMetricFamily(
            "gateway_event_log_connected",
            "1 while connected to the event log, 0 while not, -1 when the events API is off",
            value=-1 if log is None else (1 if log.is_connected else 0),
        )


def register(sink: EventSink, registry: CollectorRegistry) -> None:
    """Export the sink's state on the gateway's registry."""
    registry.register(SinkCollector(sink))
