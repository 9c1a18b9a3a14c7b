"""Event traffic for the drills and benchmarks: ``POST /v1/events`` batches at a steady rate, and
what the consumer says about them.

:class:`EventLoad` sends a batch of ``batch`` events every ``batch / rate`` seconds (open loop,
like the recommendation generator: a slow gateway sees the batches pile up), each event with a
unique id, and keeps the ids of every batch the gateway accepted (202): the events that must
not be lost. A 503 is recorded with its code (``event_log_unavailable`` while the broker is
down); its events were never acknowledged, so they are not owed.

:func:`consumer_figures` reads the consumer's ``/metrics`` (lag, applied, freshness);
:func:`applied_ids` asks the online state which accepted ids the consumer applied (its
``event_id`` dedup keys), which survives a consumer restart where its counters do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from cascade.drills.observe import Series, buckets, histogram_quantile, parse_metrics

logger = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"

# The consumer's metric names (events/ service; docs/events.md).
PENDING = "events_consumer_pending"  # gauge: messages in the log not yet applied (lag)
APPLIED = "events_applied_total"  # counter: events applied to the online state
DUPLICATES = "events_duplicates_total"  # counter: redeliveries / repeats that changed nothing
FRESHNESS = "events_freshness_seconds_bucket"  # histogram: publish (202) -> visible online
LAST_APPLIED = "events_last_applied_timestamp_seconds"


@dataclass
class EventLoad:
    """Open-loop event batches against the gateway (see the module docstring)."""

    url: str
    rate: float = 500.0  # events/s
    batch: int = 50
    users: Sequence[int] = field(default_factory=lambda: list(range(1000)))
    items: int = 1000
    headers: dict[str, str] = field(default_factory=dict)
    seed: int = 12
    timeout_s: float = 5.0
    accepted: list[str] = field(default_factory=list)  # ids of events acknowledged with 202
    statuses: Counter[str] = field(default_factory=Counter)  # "202", "503 event_log_unavailable"
    latencies: list[float] = field(default_factory=list)  # seconds, accepted batches
    accepted_at: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, n)
    sent: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _prefix: str = field(default_factory=lambda: f"d{random.getrandbits(40):010x}")

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Send until :meth:`stop`; waits for the batches in flight."""
        rng = random.Random(self.seed)
        ids = itertools.count()
        interval = self.batch / self.rate
        pending: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(
            base_url=self.url, headers=self.headers, timeout=self.timeout_s
        ) as client:
            start = time.monotonic()
            for n in itertools.count():
                if self._stop.is_set():
                    break
                delay = start + n * interval - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._stop.wait(), delay)
                        break
                    except TimeoutError:
                        pass
                now = time.time()
                batch: list[dict[str, object]] = [
                    {"event_id": f"{self._prefix}-{next(ids)}",
                     "user_id": rng.choice(self.users), "item_id": rng.randrange(self.items),
                     "type": "view" if rng.random() < 0.5 else "impression", "timestamp": now}
                    for _ in range(self.batch)
                ]  # fmt: skip
                task = asyncio.create_task(self._post(client, batch))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending)

    async def _post(self, client: httpx.AsyncClient, batch: list[dict[str, object]]) -> None:
        self.sent += len(batch)
        started = time.monotonic()
        try:
            response = await client.post(EVENTS_PATH, json={"events": batch})
        except httpx.HTTPError as exc:
            self.statuses[f"error {type(exc).__name__}"] += 1
            return
        if response.status_code == 202:
            self.accepted.extend(str(e["event_id"]) for e in batch)
            self.latencies.append(time.monotonic() - started)
            self.accepted_at.append((time.monotonic(), len(batch)))
            self.statuses["202"] += 1
            return
        code = ""
        with contextlib.suppress(ValueError):  # a body that is not our JSON: the status says it
            code = str(response.json().get("code", ""))
        self.statuses[f"{response.status_code} {code}".strip()] += 1

    def accepted_rate(self) -> float | None:
        """Accepted events/s between the first and the last accepted batch."""
        if len(self.accepted_at) < 2:
            return None
        span = self.accepted_at[-1][0] - self.accepted_at[0][0]
        total = sum(n for _, n in self.accepted_at[1:])
        return total / span if span > 0 else None


@dataclass(frozen=True)
class ConsumerFigures:
    """One reading of the consumer's ``/metrics`` (None: not exported)."""

    pending: float | None
    applied: float | None
    duplicates: float | None
    last_applied_ts: float | None
    series: dict[str, Series]


async def consumer_figures(url: str, *, timeout_s: float = 3.0) -> ConsumerFigures | None:
    """The consumer's figures, or None when it does not answer (down, restarting)."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(f"{url}/metrics")
            response.raise_for_status()
    except httpx.HTTPError:
        return None
    series = parse_metrics(response.text)

    def total(name: str) -> float | None:
        values = series.get(name)
        return None if not values else float(sum(v for _, v in values))

    return ConsumerFigures(
        pending=total(PENDING),
        applied=total(APPLIED),
        duplicates=total(DUPLICATES),
        last_applied_ts=total(LAST_APPLIED),
        series=series,
    )


def freshness_quantiles(series: dict[str, Series]) -> dict[str, float | None]:
    """p50 and p99 of the consumer's freshness histogram (seconds), over its whole life."""
    cumulative = buckets(series, FRESHNESS)
    return {
        "p50": histogram_quantile(0.50, cumulative),
        "p99": histogram_quantile(0.99, cumulative),
    }


def applied_ids(redis_url: str, ids: Iterable[str], *, prefix: str, chunk: int = 2000) -> int:
    """How many of ``ids`` the consumer applied: its dedup keys ``<prefix>d:<event_id>`` exist."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    found = 0
    try:
        batch: list[str] = []
        for event_id in ids:
            batch.append(event_id)
            if len(batch) >= chunk:
                found += _count(client, batch, prefix)
                batch = []
        if batch:
            found += _count(client, batch, prefix)
    finally:
        client.close()
    return found


def _count(client: object, ids: list[str], prefix: str) -> int:
    pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
    for event_id in ids:
        pipe.exists(f"{prefix}d:{event_id}")
    return int(sum(pipe.execute()))
