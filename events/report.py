"""Online CTR per tier and model version, from the consumer's persistent counters in Redis
(``cascade report online`` prints it). The counters survive consumer restarts; each impression
and click is counted once (in the same Lua step as its dedup key, ``events.state``)."""

from __future__ import annotations

from typing import Any

from cascade.runtime import feature_names as names
from events.state import CTR_HASH, key_prefix

TIMEOUT_S = 2.0


def online_table(
    redis_url: str, *, dataset: str | None = None, project: str | None = None
) -> list[dict[str, Any]]:
    """One row per (tier, model_version): impressions, clicks, ctr (clicks / impressions, None
    without impressions), sorted by impressions, most first. ``project`` defaults to the data
    set's Feast project (``dataset`` defaults to ``$CASCADE_DATASET`` or ``demo``). Raises
    ``redis.RedisError`` when Redis does not answer within a few seconds."""
    import os

    import redis

    project = project or names.project_name(dataset or os.environ.get("CASCADE_DATASET") or "demo")
    client = redis.Redis.from_url(
        redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
    )
    try:
        raw: dict[bytes, bytes] = client.hgetall(key_prefix(project) + CTR_HASH)  # type: ignore[assignment]
    finally:
        client.close()
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for field, value in raw.items():
        tier, version, kind = field.decode().split("\t")
        counts.setdefault((tier, version), {"impressions": 0, "clicks": 0})[kind] = int(value)
    rows = [
        {
            "tier": tier,
            "model_version": version,
            "impressions": c["impressions"],
            "clicks": c["clicks"],
            "ctr": c["clicks"] / c["impressions"] if c["impressions"] else None,
        }
        for (tier, version), c in counts.items()
    ]
    return sorted(rows, key=lambda r: (-r["impressions"], r["tier"], r["model_version"]))
