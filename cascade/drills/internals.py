"""The gateway's own view of a run: two ``/metrics`` readings and what changed between them.

Event-loop lag (``gateway_event_loop_lag_seconds``: how late a 50 ms sleep wakes up), feature
reads (``gateway_feature_read_seconds`` and its errors by kind), sheds by rule
(``gateway_shed_total{reason}``), fallbacks by reason, the adaptive in-flight limit at the end.
A metric the gateway does not export is left out. ``/metrics`` answers loopback peers without a
credential; ``GATEWAY_METRICS_TOKEN`` is sent when set.
"""

from __future__ import annotations

import logging
import os

from cascade.drills.observe import (
    Series,
    buckets_between,
    histogram_quantile,
    metric_sum,
    parse_metrics,
)

logger = logging.getLogger(__name__)

FAMILIES = (
    "gateway_event_loop_lag_seconds",
    "gateway_feature_read_",
    "gateway_shed",
    "gateway_fallbacks",
    "gateway_in_flight",
    "gateway_upstream_seconds_bucket",
)
HISTOGRAMS = {
    "event_loop_lag": ("gateway_event_loop_lag_seconds_bucket", {}),
    "feature_read": ("gateway_feature_read_seconds_bucket", {}),
    "two_tower_call": ("gateway_upstream_seconds_bucket", {"tier": "two_tower"}),
    "als_call": ("gateway_upstream_seconds_bucket", {"tier": "als"}),
}
COUNTERS = {
    "shed": ("gateway_shed_total", "reason"),
    "feature_read_errors": ("gateway_feature_read_errors_total", "kind"),
    "fallbacks": ("gateway_fallbacks_total", "reason"),
}


def _headers() -> dict[str, str]:
    token = os.environ.get("GATEWAY_METRICS_TOKEN", "")
    return {"Authorization": f"Bearer {token}"} if token else {}


def scrape(url: str, timeout_s: float = 5.0) -> dict[str, Series]:
    """One reading of the families above ({} when ``/metrics`` does not answer)."""
    import httpx

    try:
        response = httpx.get(f"{url}/metrics", headers=_headers(), timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        logger.warning("metrics reading failed: %r", exc)
        return {}
    return parse_metrics(response.text, FAMILIES)


async def ascrape(url: str, timeout_s: float = 5.0) -> dict[str, Series]:
    """:func:`scrape` without blocking the event loop (the drills' load shares it)."""
    import asyncio

    return await asyncio.to_thread(scrape, url, timeout_s)


def _by_label(
    before: dict[str, Series], after: dict[str, Series], name: str, label: str
) -> dict[str, float]:
    values = {found.get(label, "") for found, _ in after.get(name, [])}
    out = {
        v: metric_sum(after, name, **{label: v}) - metric_sum(before, name, **{label: v})
        for v in sorted(values)
    }
    return {k: v for k, v in out.items() if v > 0}


def figures(before: dict[str, Series], after: dict[str, Series]) -> dict[str, float]:
    """Flat figures: ``<histogram>_p50_ms``/``_p99_ms``, ``<counter>_<label>``, the limit."""
    out: dict[str, float] = {}
    for key, (name, labels) in HISTOGRAMS.items():
        cumulative = buckets_between(before, after, name, **labels)
        for q in (0.5, 0.99):
            value = histogram_quantile(q, cumulative)
            if value is not None:
                out[f"{key}_p{round(q * 100)}_ms"] = round(value * 1000, 1)
        if cumulative:
            out[f"{key}_count"] = cumulative[-1][1]
    for key, (name, label) in COUNTERS.items():
        for label_value, n in _by_label(before, after, name, label).items():
            out[f"{key}_{label_value}"] = n
    if "gateway_in_flight_limit" in after:
        out["in_flight_limit_at_end"] = metric_sum(after, "gateway_in_flight_limit")
    return out


def markdown(before: dict[str, Series], after: dict[str, Series]) -> str:
    """The summary's section: one row per figure (empty when the readings are missing)."""
    found = figures(before, after)
    if not found:
        return "## Gateway internals\n\nno `/metrics` readings (the gateway did not answer).\n"
    lines = ["## Gateway internals (its `/metrics`, over the run)", "", "| figure | value |"]
    lines.append("|---|---|")
    lines += [f"| {k} | {v:g} |" for k, v in found.items()]
    if "event_loop_lag_p99_ms" not in found:
        lines.append("| event_loop_lag | not exported |")
    return "\n".join(lines) + "\n"
