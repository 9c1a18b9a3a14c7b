"""The gateway's own timings for the serving benchmark, from its Prometheus ``/metrics``.

``server_sums`` scrapes the sums and counts of three histograms (the whole request, the feature
read, the primary call) before and after a run; ``server_side_summary`` turns the difference
into server-side means and the gateway's own time (request - features - primary).
"""

from __future__ import annotations

import httpx

# Prometheus sample name (with labels) -> our key.
WANTED = {
    'gateway_request_seconds_sum{route="/v1/recommendations/{user_id}",tier="two_tower"}': "request_sum",
    'gateway_request_seconds_count{route="/v1/recommendations/{user_id}",tier="two_tower"}': "request_count",
    "gateway_feature_read_seconds_sum": "feature_sum",
    "gateway_feature_read_seconds_count": "feature_count",
    'gateway_upstream_seconds_sum{outcome="ok",tier="two_tower"}': "primary_sum",
    'gateway_upstream_seconds_count{outcome="ok",tier="two_tower"}': "primary_count",
}


def parse_sums(text: str) -> dict[str, float]:
    """The ``WANTED`` samples of a Prometheus text exposition, by our key."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in WANTED:
            out[WANTED[name]] = float(value)
    return out


async def server_sums(gateway_url: str) -> dict[str, float]:
    """Sums and counts of the gateway's own histograms: request, feature read, primary call."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=5.0) as client:
        text = (await client.get("/metrics")).text
    return parse_sums(text)


def server_side_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, object]:
    """Server-side mean ms per histogram and the gateway's own time; empty without requests."""
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    if not delta.get("request_count"):
        return {}
    per = {
        key: 1000 * delta[key] / max(delta[key.replace("_sum", "_count")], 1)
        for key in delta
        if key.endswith("_sum")
    }
    return {
        "server_side_mean_ms": {k: round(v, 2) for k, v in per.items()},
        "server_side_overhead_mean_ms": round(
            per.get("request_sum", 0.0) - per.get("feature_sum", 0.0) - per.get("primary_sum", 0.0),
            2,
        ),
    }
