"""Serving benchmark against running processes: direct Triton, the gateway, the MF service.

``bench_serve`` measures, in one run on this machine (closed loop: ``concurrency`` workers, each
sending its next request when the previous one answered, for ``duration_s`` each):

(a) direct Triton (gRPC aio, the gateway's own request builder) p50/p99;
(b) the gateway's primary path p50/p99 at each concurrency, and the highest request rate with
    p99 <= ``p99_target_ms``;
(c) the MF service alone;
(d) the gateway with its breaker held open (a second gateway started with
    ``GATEWAY_BREAKER_FORCE_OPEN=true``), i.e. features + ALS;
plus the Feast online read alone, so the gateway's own overhead at p50 is
``gateway p50 - (feature read p50 + Triton p50)``.

The load drivers are ``cascade.bench.closed_loop`` (httpx, Triton, Feast) and
``cascade.bench.wrk_driver`` (wrk, when installed); the gateway's server-side timings come from
``cascade.bench.gateway_metrics``. The load generator shares the CPUs with what it measures, so
absolute numbers are pessimistic.
``python -m cascade.bench.gateway --gateway URL --triton HOST:PORT --mf URL [--open-gateway URL]``
prints the table (markdown) and writes JSON when ``--json PATH`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from cascade.bench.closed_loop import BenchRow, bench_features, bench_http, bench_triton
from cascade.bench.gateway_metrics import server_side_summary, server_sums
from cascade.bench.table import markdown_table
from cascade.bench.wrk_driver import bench_wrk


async def bench_serve(
    *,
    gateway_url: str,
    triton_url: str | None,
    mf_url: str | None,
    open_gateway_url: str | None = None,
    dataset: str | None = None,
    users: Sequence[int] = tuple(range(1, 201)),
    k: int = 20,
    concurrencies: Sequence[int] = (1, 2, 4, 8, 16),
    duration_s: float = 5.0,
    p99_target_ms: float = 50.0,
) -> dict[str, object]:
    """Run (a)-(d) against running services; returns the rows and the summary figures."""
    rows: list[BenchRow] = []
    rec = f"/v1/recommendations/{{}}?k={k}"
    use_wrk = shutil.which("wrk") is not None

    async def measure(name: str, url: str, concurrency: int) -> BenchRow:
        if use_wrk:
            return await asyncio.to_thread(
                bench_wrk,
                f"{name}, wrk",
                url,
                concurrency=concurrency,
                duration_s=duration_s,
                users=users,
                k=k,
            )
        return await bench_http(
            name, url, rec.format, concurrency=concurrency, duration_s=duration_s, users=users
        )

    if dataset:
        rows.append(await bench_features(dataset=dataset, users=users))
    if triton_url:
        for c in (1, 8):
            rows.append(
                await bench_triton(
                    triton_url, concurrency=c, duration_s=duration_s, users=users, k=k
                )
            )
    # The first concurrency through httpx, between two scrapes of the gateway's own histograms.
    before = await server_sums(gateway_url)
    gateway_rows = [
        await bench_http(
            "gateway (primary path)",
            gateway_url,
            rec.format,
            concurrency=c,
            duration_s=duration_s,
            users=users,
        )
        for c in concurrencies[:1]
    ]
    after = await server_sums(gateway_url)
    for c in concurrencies if use_wrk else concurrencies[1:]:
        gateway_rows.append(await measure("gateway (primary path)", gateway_url, c))
    rows += gateway_rows
    for name, url in (
        ("MF service alone", mf_url),
        ("gateway, breaker held open", open_gateway_url),
    ):
        if not url:
            continue
        for c in (1, 8):
            rows.append(await measure(name, url, c))
    ok = [
        r for r in gateway_rows if r.p99_ms <= p99_target_ms and r.errors == 0 and "wrk" in r.target
    ] or [r for r in gateway_rows if r.p99_ms <= p99_target_ms and r.errors == 0]
    best = max(ok, key=lambda r: r.rps) if ok else None
    summary: dict[str, object] = {
        "best_rps_at_p99_target": round(best.rps, 1) if best else None,
        "best_concurrency": best.concurrency if best else None,
        "p99_target_ms": p99_target_ms,
    }
    singles = {r.target: r for r in rows if r.concurrency == 1}
    g = singles.get("gateway (primary path), wrk") or singles.get("gateway (primary path)")
    t = singles.get("triton direct (gRPC)")
    f = singles.get("feast online read")
    if g and t:
        upstream = t.p50_ms + (f.p50_ms if f else 0.0)
        summary["gateway_overhead_p50_ms"] = round(g.p50_ms - upstream, 2)
    summary.update(server_side_summary(before, after))
    return {"rows": [asdict(r) for r in rows], "summary": summary}


def format_table(result: dict[str, object]) -> str:
    """Markdown table of ``bench_serve``'s rows plus its summary line."""
    keys = ("target", "concurrency", "requests", "errors", "rps", "p50_ms", "p99_ms", "served_by")
    table = markdown_table(
        ["target", "conc.", "requests", "errors", "req/s", "p50 ms", "p99 ms", "served by"],
        [[r[key] for key in keys] for r in result["rows"]],  # type: ignore[attr-defined]
    )
    return table + "\n\nsummary: " + json.dumps(result["summary"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--triton", help="gRPC host:port")
    parser.add_argument("--mf")
    parser.add_argument(
        "--open-gateway", help="a gateway started with GATEWAY_BREAKER_FORCE_OPEN=true"
    )
    parser.add_argument("--dataset", help="also time the Feast online read of this data set")
    parser.add_argument("--users", default="1-200", help="user id range a-b")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    lo, hi = (int(x) for x in args.users.split("-"))
    result = asyncio.run(
        bench_serve(
            gateway_url=args.gateway,
            triton_url=args.triton,
            mf_url=args.mf,
            open_gateway_url=args.open_gateway,
            dataset=args.dataset,
            users=list(range(lo, hi + 1)),
            duration_s=args.duration,
        )
    )
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
