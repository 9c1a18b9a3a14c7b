"""Closed-loop load drivers of the serving benchmark: HTTP (httpx), direct Triton, the Feast read.

Closed loop: ``concurrency`` workers, each sending its next request when the previous one
answered, for ``duration_s``, after a warm-up. Every driver returns one :class:`BenchRow`;
``on_measure`` (when given) is called after the warm-up, just before the measured window (the
CPU meter's ``start``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx

from cascade.bench.mf_driver import percentiles_ms
from gateway.tiers.types import UserFeatures
from two_tower import contract


@dataclass(frozen=True)
class BenchRow:
    """One measured configuration."""

    target: str
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    served_by: str = ""
    # CPU ms per request of each process over the measured window (cascade.bench.cpu_meter)
    cpu_ms_per_req: dict[str, float] = field(default_factory=dict)


async def closed_loop(
    call: Callable[[int], Awaitable[str]],
    *,
    concurrency: int,
    duration_s: float,
    users: Sequence[int],
) -> tuple[list[float], int, dict[str, int]]:
    """Latencies (s), the error count and the answers per tier of ``call`` under closed loop."""
    latencies: list[float] = []
    errors = 0
    tiers: dict[str, int] = {}
    stop_at = time.perf_counter() + duration_s

    async def worker(offset: int) -> None:
        nonlocal errors
        i = offset
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                tier = await call(users[i % len(users)])
            except (httpx.HTTPError, OSError, ValueError, RuntimeError):
                errors += 1
                tier = "error"
            latencies.append(time.perf_counter() - started)
            tiers[tier] = tiers.get(tier, 0) + 1
            i += concurrency

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies, errors, tiers


def summarize(
    target: str,
    concurrency: int,
    duration_s: float,
    lat: list[float],
    errors: int,
    tiers: dict[str, int],
) -> BenchRow:
    """One row from a run's latencies; ``served_by`` names the tier that answered most."""
    p50, p99 = percentiles_ms(lat, (50, 99))
    top = max(tiers, key=lambda t: tiers[t]) if tiers else ""
    share = f"{top} {100 * tiers.get(top, 0) / max(1, sum(tiers.values())):.0f}%" if top else ""
    return BenchRow(
        target=target,
        concurrency=concurrency,
        requests=len(lat),
        errors=errors,
        rps=len(lat) / duration_s,
        p50_ms=p50,
        p99_ms=p99,
        served_by=share,
    )


async def bench_http(
    target: str,
    base_url: str,
    path: Callable[[int], str],
    *,
    concurrency: int,
    duration_s: float,
    users: Sequence[int],
    warmup_s: float = 1.0,
    on_measure: Callable[[], None] | None = None,
) -> BenchRow:
    """``GET path(user)`` on ``base_url``; the tier is the answer's ``X-Served-By`` header."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0, limits=limits) as client:

        async def call(user: int) -> str:
            r = await client.get(path(user))
            r.raise_for_status()
            return str(r.headers.get("X-Served-By", "ok"))

        await closed_loop(call, concurrency=concurrency, duration_s=warmup_s, users=users)
        if on_measure:
            on_measure()
        lat, errors, tiers = await closed_loop(
            call, concurrency=concurrency, duration_s=duration_s, users=users
        )
    return summarize(target, concurrency, duration_s, lat, errors, tiers)


async def bench_triton(
    url: str,
    *,
    concurrency: int,
    duration_s: float,
    users: Sequence[int],
    k: int,
    on_measure: Callable[[], None] | None = None,
) -> BenchRow:
    """Direct Triton over gRPC aio, with the gateway's own request builder."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aio

    from gateway.tiers.triton import build_inputs

    client = aio.InferenceServerClient(url=url)
    outputs = [grpcclient.InferRequestedOutput(s.name) for s in contract.OUTPUTS]

    async def call(user: int) -> str:
        inputs = build_inputs(UserFeatures(user_id=user), k=k, exclude=[], module=grpcclient)
        await client.infer(contract.MODEL_NAME, inputs, outputs=outputs)
        return "triton"

    try:
        await closed_loop(call, concurrency=concurrency, duration_s=1.0, users=users)
        if on_measure:
            on_measure()
        lat, errors, tiers = await closed_loop(
            call, concurrency=concurrency, duration_s=duration_s, users=users
        )
    finally:
        await client.close()
    return summarize("triton direct (gRPC)", concurrency, duration_s, lat, errors, tiers)


async def bench_features(
    *,
    dataset: str,
    users: Sequence[int],
    n: int = 500,
    on_measure: Callable[[], None] | None = None,
) -> BenchRow:
    """``n`` Feast online reads one after the other (concurrency 1)."""
    from cascade.runtime.paths import Layout
    from gateway.tiers.features import FeastFeatureReader

    reader = await asyncio.to_thread(
        FeastFeatureReader.open, layout=Layout.from_env(), dataset=dataset, socket_timeout_s=0.1
    )
    await reader.start()
    lat: list[float] = []
    if on_measure:
        on_measure()
    try:
        for i in range(n):
            started = time.perf_counter()
            await reader.read(int(users[i % len(users)]), timeout_s=1.0)
            lat.append(time.perf_counter() - started)
    finally:
        await reader.close()
    total = sum(lat)
    return summarize("feast online read", 1, total, lat, 0, {"features": n})
