"""The events part of the load test's summary: what the API answered and what the consumer did.

From the locustfile's counts (``CASCADE_LOADTEST_EVENTS``: batches by status, events sent and
accepted) and two readings of the consumer's ``/metrics`` around the run: events applied,
freshness p50/p99 of the events applied during the run (202 to online write, its histogram's
difference), and the lag (``events_consumer_pending``) at the end. A consumer that does not
answer leaves its lines out and says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cascade.drills.event_load import APPLIED, FRESHNESS, PENDING
from cascade.drills.observe import (
    Series,
    buckets_between,
    histogram_quantile,
    metric_sum,
    parse_metrics,
)

logger = logging.getLogger(__name__)


def scrape_consumer(url: str, timeout_s: float = 5.0) -> dict[str, Series] | None:
    """One reading of the consumer's ``/metrics``; None when it does not answer."""
    import httpx

    try:
        response = httpx.get(f"{url}/metrics", timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        logger.warning("events consumer metrics not read at %s: %r", url, exc)
        return None
    return parse_metrics(response.text, ("events_",))


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def markdown(
    *,
    counts_path: Path,
    before: dict[str, Series] | None,
    after: dict[str, Series] | None,
    duration_s: float,
) -> str:
    """The ``## Events`` section of the summary."""
    lines = ["## Events (POST /v1/events and the consumer)", ""]
    counts: dict[str, Any] = {}
    if counts_path.is_file():
        counts = json.loads(counts_path.read_text())
    if not counts:
        lines.append(f"- the locustfile wrote no event counts ({counts_path} missing)")
    else:
        accepted = int(counts.get("events_accepted", 0))
        batches = counts.get("batches_by_status", {})
        lines += [
            f"- events accepted (202): {accepted:,} of {int(counts.get('events_sent', 0)):,} sent"
            f" = {accepted / duration_s:,.0f} events/s over {duration_s:.0f} s"
            f" ({int(counts.get('clicks', 0)):,} clicks)",
            "- batches by status: "
            + (", ".join(f"{k}: {v:,}" for k, v in sorted(batches.items())) or "none"),
        ]
    if before is None or after is None:
        lines.append("- consumer: its /metrics did not answer (no freshness or lag figures)")
        return "\n".join(lines) + "\n"
    applied = metric_sum(after, APPLIED) - metric_sum(before, APPLIED)
    fresh = buckets_between(before, after, FRESHNESS)
    pending = after.get(PENDING)
    lines += [
        f"- consumer applied {applied:,.0f} events during the run",
        f"- freshness (202 to the online store), events of this run: "
        f"p50 {_ms(histogram_quantile(0.5, fresh))}, p99 {_ms(histogram_quantile(0.99, fresh))}",
        f"- consumer lag at the end: {sum(v for _, v in pending):,.0f} messages pending"
        if pending
        else "- consumer lag: not exported",
    ]
    return "\n".join(lines) + "\n"
