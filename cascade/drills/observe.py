"""What the drills read from outside the gateway: Prometheus text, histogram quantiles, pollers.

- :func:`parse_metrics` reads the Prometheus text format into ``{name: [(labels, value)]}``,
  only the families the drills read (:data:`DRILL_FAMILIES`): the parse runs on the load
  generator's event loop, and a full registry took ~45 ms there, a stall the drill measured.
- :func:`metric_sum` adds the series of one name whose labels include the given ones;
  :func:`sum_between` and :func:`buckets_between` give what changed between two readings.
- :func:`histogram_quantile` estimates a quantile from cumulative buckets the way Prometheus's
  ``histogram_quantile`` does (linear inside the bucket).
- :class:`MetricsPoller` samples the gateway's ``/metrics`` every ``interval_s``: breaker state
  gauge, transition counters and primary calls, each with the time it was read.
- :class:`RssSampler` samples a process's resident memory (psutil).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from cascade.drills.background import BackgroundLoop

Series = list[tuple[dict[str, str], float]]
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

# Names exported by gateway/metrics.py (Counter names get ``_total`` on the wire).
BREAKER_STATE = "gateway_breaker_state"
TRANSITIONS = "gateway_breaker_transitions_total"
UPSTREAM_COUNT = "gateway_upstream_seconds_count"
FEATURE_BUCKET = "gateway_feature_read_seconds_bucket"
GC_PAUSE_SUM = "gateway_gc_pause_seconds_sum"
GC_PAUSE_COUNT = "gateway_gc_pause_seconds_count"
LOOP_LAG_CANDIDATES = ("gateway_event_loop_lag_seconds", "gateway_event_loop_lag")
STATE_NAMES = {0: "closed", 1: "half-open", 2: "open"}
POLL_FAMILIES = ("gateway_breaker_", "gateway_upstream_seconds_count")
DRILL_FAMILIES = (
    *POLL_FAMILIES,
    "gateway_upstream_seconds_bucket",
    "gateway_feature_read_seconds",
    "gateway_gc_pause_seconds",
    "gateway_event_loop_lag",
)


def parse_metrics(text: str, families: tuple[str, ...] | None = None) -> dict[str, Series]:
    """Prometheus text format -> ``{metric name: [(labels, value), ...]}`` (comments skipped).

    ``families``: keep only series whose name starts with one of these prefixes (None: all).
    """
    out: dict[str, Series] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if families is not None and not line.startswith(families):
            continue
        head, _, value = line.rpartition(" ")
        if not head:
            continue
        name, brace, labels = head.partition("{")
        try:
            number = float(value)
        except ValueError:
            continue
        found = dict(_LABEL.findall(labels)) if brace else {}
        out.setdefault(name.strip(), []).append((found, number))
    return out


def metric_sum(metrics: dict[str, Series], name: str, **labels: str) -> float:
    """Sum of the series ``name`` whose labels include ``labels`` (0 when absent)."""
    return sum(
        value
        for found, value in metrics.get(name, [])
        if all(found.get(k) == v for k, v in labels.items())
    )


def buckets(metrics: dict[str, Series], name: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` pairs of a histogram (series summed over other labels)."""
    acc: dict[float, float] = {}
    for found, value in metrics.get(name, []):
        if "le" not in found or any(found.get(k) != v for k, v in labels.items()):
            continue
        le = math.inf if found["le"] in ("+Inf", "inf") else float(found["le"])
        acc[le] = acc.get(le, 0.0) + value
    return sorted(acc.items())


def bucket_delta(
    after: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Observations made between two readings of the same histogram."""
    old = dict(before)
    return [(le, count - old.get(le, 0.0)) for le, count in after]


def buckets_between(
    before: dict[str, Series], after: dict[str, Series], name: str, **labels: str
) -> list[tuple[float, float]]:
    """Cumulative buckets of the observations histogram ``name`` got between two readings."""
    return bucket_delta(buckets(after, name, **labels), buckets(before, name, **labels))


def sum_between(
    before: dict[str, Series], after: dict[str, Series], name: str, **labels: str
) -> float:
    """How much the series ``name`` (with ``labels``) grew between two readings."""
    return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)


def histogram_quantile(q: float, cumulative: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus-style quantile estimate; None when the histogram is empty.

    Returns the lower edge of the ``+Inf`` bucket's finite neighbour when the quantile falls in
    the ``+Inf`` bucket, like Prometheus.
    """
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    total = cumulative[-1][1]
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in cumulative:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


def quantile_bucket(q: float, cumulative: Sequence[tuple[float, float]]) -> float | None:
    """Upper edge of the bucket holding the ``q`` quantile: an upper bound on it."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    return next(le for le, count in cumulative if count >= rank)


@dataclass(frozen=True)
class Poll:
    """One reading of the gateway's metrics, ``t`` seconds after the drill's start."""

    t: float
    breaker: int  # 0 closed, 1 half-open, 2 open, -1 unknown
    opens: float  # transitions to open, since the gateway started
    half_opens: float
    closes: float
    primary_calls: float  # two_tower upstream calls finished (any outcome)


def poll_from(metrics: dict[str, Series], t: float) -> Poll:
    state = metrics.get(BREAKER_STATE)
    return Poll(
        t=t,
        breaker=int(metric_sum(metrics, BREAKER_STATE, breaker="primary")) if state else -1,
        opens=metric_sum(metrics, TRANSITIONS, to_state="open"),
        half_opens=metric_sum(metrics, TRANSITIONS, to_state="half-open"),
        closes=metric_sum(metrics, TRANSITIONS, to_state="closed"),
        primary_calls=metric_sum(metrics, UPSTREAM_COUNT, tier="two_tower"),
    )


@dataclass
class MetricsPoller(BackgroundLoop):
    """Reads ``{url}/metrics`` every ``interval_s`` while running; keeps every :class:`Poll`."""

    url: str
    t0: float
    interval_s: float = 0.1
    headers: dict[str, str] = field(default_factory=dict)
    polls: list[Poll] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def fetch(
        self, client: httpx.AsyncClient, families: tuple[str, ...] = DRILL_FAMILIES
    ) -> dict[str, Series]:
        """One reading of the metrics the drills use (for phase marks)."""
        response = await client.get(f"{self.url}/metrics")
        response.raise_for_status()
        return parse_metrics(response.text, families)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=1.0, headers=self.headers) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    metrics = await self.fetch(client, POLL_FAMILIES)
                    self.polls.append(poll_from(metrics, time.monotonic() - self.t0))
                await asyncio.sleep(self.interval_s)

    def at(self, t: float) -> Poll | None:
        """The first poll read at or after ``t`` (None if none)."""
        return next((p for p in self.polls if p.t >= t), None)

    def before(self, t: float) -> Poll | None:
        """The last poll read before ``t``."""
        earlier = [p for p in self.polls if p.t < t]
        return earlier[-1] if earlier else None


@dataclass
class RssSampler(BackgroundLoop):
    """Resident memory of process ``pid`` every ``interval_s``: ``[(t, bytes)]``."""

    pid: int
    t0: float
    interval_s: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        import psutil

        proc = psutil.Process(self.pid)
        while True:
            with contextlib.suppress(psutil.Error):
                self.samples.append((time.monotonic() - self.t0, int(proc.memory_info().rss)))
            await asyncio.sleep(self.interval_s)
