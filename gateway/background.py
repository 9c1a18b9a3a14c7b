"""The gateway's background tasks, started and cancelled by the lifespan."""

from __future__ import annotations

import asyncio

from gateway.components import Components
from gateway.edge.admission import AdaptiveLimit
from gateway.metrics import GatewayMetrics

LOOP_LAG_INTERVAL_S = 0.05


async def refresh_popular(
    components: Components, interval_s: float, metrics: GatewayMetrics
) -> None:
    """Reload the popular list when the ALS ``latest`` pointer moved (file reads off the loop)."""
    while True:
        await asyncio.sleep(interval_s)
        if await asyncio.to_thread(components.popular.refresh):
            snap = components.popular.snapshot
            metrics.popular_items.set(len(snap.items) if snap else 0)


async def watch_loop_lag(
    metrics: GatewayMetrics, admission: AdaptiveLimit, interval_s: float = LOOP_LAG_INTERVAL_S
) -> None:
    """Sleep ``interval_s`` and record how late the loop woke us: the event-loop lag, which
    also steers the adaptive in-flight limit."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        lag = max(0.0, loop.time() - started - interval_s)
        metrics.loop_lag.observe(lag)
        metrics.in_flight_limit.set(admission.observe_lag(lag))
