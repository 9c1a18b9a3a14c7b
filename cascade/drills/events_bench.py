"""``python -m cascade.drills.events_bench``: what ``POST /v1/events`` and the consumer sustain on
this machine, with recommendations served in the same run (issue 17's benchmark targets).

On the drill stack (``cascade.drills.stack``: real gateway, Triton, MF, Redis, nats-server and
consumer; data and models built once under ``$CASCADE_HOME/drills``), two phases, each with
open-loop recommendations at ``--rate`` (their p99 and non-2xx count reported beside):

1. **Throughput**: ``--posters`` closed loops post batches of ``--batch`` events as fast as the
   gateway acknowledges them for ``--duration`` s: accepted events/s, batch p50/p99, statuses.
2. **Freshness**: open-loop events at ``--event-rate`` (500/s) for ``--duration`` s: the
   consumer's freshness histogram (log append to online write) over the phase, p50/p99, its
   applied rate and the lag at the end.

Figures are for comparing on one machine, not across machines (DESIGN.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import httpx
import typer

from cascade.drills import analysis as a
from cascade.drills.event_load import (
    APPLIED,
    FRESHNESS,
    EventLoad,
    consumer_figures,
)
from cascade.drills.load import auth_headers
from cascade.drills.observe import buckets_between, histogram_quantile, metric_sum
from cascade.drills.target import DrillTarget
from cascade.drills.timeline import Run
from cascade.runtime.paths import Layout

logger = logging.getLogger(__name__)


async def _poster(
    client: httpx.AsyncClient,
    users: list[int],
    batch: int,
    stop: float,
    out: dict[str, list[float]],
) -> None:
    n = 0
    prefix = f"b{os.getpid():x}{id(out) % 10_000:04d}{time.monotonic_ns() % 100_000:05d}"
    while time.monotonic() < stop:
        now = time.time()
        events = [
            {"event_id": f"{prefix}-{n}-{i}", "user_id": users[(n * batch + i) % len(users)],
             "item_id": (n + i) % 200, "type": "view", "timestamp": now}
            for i in range(batch)
        ]  # fmt: skip
        n += 1
        started = time.monotonic()
        try:
            response = await client.post("/v1/events", json={"events": events})
            status = str(response.status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        out.setdefault(status, []).append(time.monotonic() - started)


async def throughput(
    target: DrillTarget, *, rate: float, posters: int, batch: int, duration_s: float
) -> dict[str, object]:
    """Phase 1 (see the module docstring)."""
    out: dict[str, list[float]] = {}
    async with Run(target, rate=rate, seed=21, poll_s=1.0) as run:
        await run.sleep(1.0)  # warm-up, left out
        start = run.now()
        stop = time.monotonic() + duration_s
        async with httpx.AsyncClient(
            base_url=target.url, headers=auth_headers(), timeout=10.0
        ) as client:
            await asyncio.gather(
                *(_poster(client, target.users[:2000], batch, stop, out) for _ in range(posters))
            )
        end = run.now()
    recs = a.window(run.samples, start, end)
    accepted = len(out.get("202", [])) * batch
    return {
        "events/s accepted": round(accepted / (end - start)),
        "batch p50 ms": a.percentile([x * 1000 for x in out.get("202", [])], 50),
        "batch p99 ms": a.percentile([x * 1000 for x in out.get("202", [])], 99),
        "batches by status": {k: len(v) for k, v in out.items()},
        "recommendations/s": round(len(recs) / (end - start)),
        "recommendations p99 ms": a.p99_ms(recs),
        "recommendations non-2xx": a.non_2xx(recs),
    }


async def freshness(
    target: DrillTarget, *, rate: float, event_rate: float, batch: int, duration_s: float
) -> dict[str, object]:
    """Phase 2 (see the module docstring)."""
    before = await consumer_figures(target.events_url)
    load = EventLoad(url=target.url, rate=event_rate, batch=batch,
                     users=list(target.users[:5000]), headers=auth_headers())  # fmt: skip
    async with Run(target, rate=rate, seed=22, poll_s=1.0) as run:
        task = asyncio.create_task(load.run())
        start = run.now()
        await run.sleep(duration_s)
        load.stop()
        await task
        end = run.now()
    await asyncio.sleep(2.0)  # the last batches reach the online store
    after = await consumer_figures(target.events_url)
    fresh: list[tuple[float, float]] = []
    applied = None
    pending = None
    if before is not None and after is not None:
        fresh = buckets_between(before.series, after.series, FRESHNESS)
        applied = metric_sum(after.series, APPLIED) - metric_sum(before.series, APPLIED)
        pending = after.pending
    recs = a.window(run.samples, start, end)
    p50, p99 = histogram_quantile(0.5, fresh), histogram_quantile(0.99, fresh)
    return {
        "events/s offered": event_rate,
        "events/s accepted": None
        if load.accepted_rate() is None
        else round(load.accepted_rate() or 0),
        "freshness p50 ms": None if p50 is None else round(p50 * 1000),
        "freshness p99 ms": None if p99 is None else round(p99 * 1000),
        "events applied": applied,
        "pending at the end": pending,
        "batches by status": dict(load.statuses),
        "recommendations p99 ms": a.p99_ms(recs),
        "recommendations non-2xx": a.non_2xx(recs),
    }


async def bench(
    *, scale: str, home: Path, rate: float, posters: int, batch: int, event_rate: float,
    duration_s: float,
) -> list[tuple[str, dict[str, object]]]:  # fmt: skip
    from cascade.drills.stack import DrillStack

    stack = DrillStack(home=home, scale=scale)
    try:
        await stack.start()
        target = stack.target()
        results = [
            (
                "throughput",
                await throughput(
                    target, rate=rate, posters=posters, batch=batch, duration_s=duration_s
                ),
            ),
            (
                "freshness",
                await freshness(
                    target, rate=rate, event_rate=event_rate, batch=batch, duration_s=duration_s
                ),
            ),
        ]
    finally:
        await stack.stop()
    return results


def main(
    scale: str = typer.Option("tiny", help="Synthetic data scale of the drill stack."),
    rate: float = typer.Option(50.0, help="Recommendations/s during both phases."),
    posters: int = typer.Option(4, help="Phase 1: concurrent closed-loop posters."),
    batch: int = typer.Option(50, help="Events per batch."),
    event_rate: float = typer.Option(500.0, help="Phase 2: events/s offered."),
    duration: float = typer.Option(20.0, help="Seconds per phase."),
) -> None:
    """Events API throughput and consumer freshness beside recommendations; prints a table."""
    layout = Layout.from_env()
    results = asyncio.run(
        bench(
            scale=scale,
            home=layout.home / "drills",
            rate=rate,
            posters=posters,
            batch=batch,
            event_rate=event_rate,
            duration_s=duration,
        )
    )
    for name, figures in results:
        typer.echo(f"## {name}")
        for key, value in figures.items():
            typer.echo(f"- {key}: {value}")


if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("CASCADE_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    typer.run(main)
