"""Open-loop load driver for the MF service, run as its own process by ``cascade.bench.mf_service``.

Request i is due at ``i / rate`` whatever the earlier answers did, and its latency counts from
that due time, so a stalled server cannot hide its queue (no coordinated omission). The client is
a minimal asyncio HTTP/1.1 keep-alive client, lighter than httpx, because it shares the cores
with the server. Prints one JSON line of figures.

    python -m cascade.bench.mf_driver --port 8001 --rate 500 --duration 20 --users 20000 --k 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_CONNECTIONS = 64
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def percentiles_ms(latencies_s: Sequence[float], quantiles: Sequence[float]) -> list[float]:
    """The ``quantiles`` (0-100) of latencies given in seconds, in ms; NaN when there are none."""
    ms = np.asarray(latencies_s) * 1000 if len(latencies_s) else np.asarray([np.nan])
    return [float(np.percentile(ms, q)) for q in quantiles]


async def drive(
    host: str, port: int, *, rate: float, duration_s: float, n_users: int, k: int
) -> dict[str, Any]:
    """Send ``GET /v1/recommendations/{user}?k=`` at ``rate`` for ``duration_s``; the figures."""
    idle: list[Conn] = []
    latencies: list[float] = []
    rng = np.random.default_rng(1)
    # 10% unknown users (the popular path), like a real mix of returning and new users
    users = rng.integers(0, int(n_users * 1.1), size=int(rate * duration_s) + 1)

    slots = asyncio.Semaphore(MAX_CONNECTIONS)  # a stalled server queues here, still timed

    error_kinds: dict[str, int] = {}

    async def exchange(conn: Conn, user: int) -> int:
        reader, writer = conn
        writer.write(f"GET /v1/recommendations/{user}?k={k} HTTP/1.1\r\nHost: mf\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        return status

    async def one(user: int, due: float) -> None:
        async with slots:
            reused = bool(idle)
            conn = idle.pop() if reused else await asyncio.open_connection(host, port)
            try:
                try:
                    status = await exchange(conn, user)
                except (ConnectionError, asyncio.IncompleteReadError):
                    if not reused:
                        raise
                    # the server closed an idle keep-alive connection (uvicorn: after 5 s);
                    # like any HTTP client, retry once on a fresh connection
                    conn[1].close()
                    conn = await asyncio.open_connection(host, port)
                    status = await exchange(conn, user)
            except (OSError, asyncio.IncompleteReadError, StopIteration, ValueError) as exc:
                error_kinds[type(exc).__name__] = error_kinds.get(type(exc).__name__, 0) + 1
                conn[1].close()
                return
            latencies.append(time.perf_counter() - due)
            if status != 200:
                error_kinds[f"http_{status}"] = error_kinds.get(f"http_{status}", 0) + 1
            idle.append(conn)

    tasks = []
    start = time.perf_counter() + 0.05
    for i, user in enumerate(users):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(int(user), due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for _, writer in idle:
        writer.close()
    p50, p90, p99, top = percentiles_ms(latencies, (50, 90, 99, 100))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "driver_cpu_ms_per_request": 1000 * (usage.ru_utime + usage.ru_stime) / max(1, len(users)),
        "requests": len(users),
        "errors": sum(error_kinds.values()),
        "error_kinds": error_kinds,
        "achieved_rate": len(latencies) / elapsed,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": top,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    figures = asyncio.run(
        drive(
            "127.0.0.1",
            args.port,
            rate=args.rate,
            duration_s=args.duration,
            n_users=args.users,
            k=args.k,
        )
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
