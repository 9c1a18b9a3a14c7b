"""Serving benchmark against running processes: direct Triton, the gateway, the MF service.

``bench_serve`` measures, in one run on this machine (closed loop: ``concurrency`` workers, each
sending its next request when the previous one answered, for ``duration_s`` each):

(a) direct Triton (gRPC aio, the gateway's own request builder) p50/p99;
(b) the gateway's primary path p50/p99 at each concurrency, and the highest request rate with
    p99 <= ``p99_target_ms``;
(c) the MF service alone;
(d) the gateway with its breaker held open (a second gateway started with
    ``GATEWAY_BREAKER_FORCE_OPEN=true``), i.e. features + ALS;
(e) a bare FastAPI app (``cascade.bench.bare_app``) at the gateway's concurrencies with the same
    driver, each right after the gateway's row: the gateway's best req/s at the p99 target over
    the bare app's is a ratio that holds from one machine to the next;
plus the Feast online read alone, so the gateway's own overhead at p50 is
``gateway p50 - (feature read p50 + Triton p50)``. With the processes' ids, every row also gets
the CPU milliseconds per request of the gateway (or bare app), the MF service and Triton
(``cascade.bench.cpu_meter``).

The load drivers are ``cascade.bench.closed_loop`` (httpx, Triton, Feast) and
``cascade.bench.wrk_driver`` (wrk, when installed); the gateway's server-side timings come from
``cascade.bench.gateway_metrics``. The load generator shares the CPUs with what it measures, so
absolute numbers are pessimistic.
``python -m cascade.bench.gateway --gateway URL --triton HOST:PORT --mf URL [--open-gateway URL]
[--bare URL]``
prints the table (markdown) and writes JSON when ``--json PATH`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cascade.bench.closed_loop import BenchRow, bench_features, bench_http, bench_triton
from cascade.bench.cpu_meter import SELF, CpuMeter, idle_cpu
from cascade.bench.gateway_metrics import server_side_summary, server_sums
from cascade.bench.table import markdown_table
from cascade.bench.wrk_driver import bench_wrk

PRIMARY, BARE = "gateway (primary path)", "bare FastAPI app"


async def bench_serve(
    *,
    gateway_url: str,
    triton_url: str | None,
    mf_url: str | None,
    open_gateway_url: str | None = None,
    bare_url: str | None = None,
    pids: Mapping[str, int] | None = None,
    dataset: str | None = None,
    users: Sequence[int] = tuple(range(1, 201)),
    k: int = 20,
    concurrencies: Sequence[int] = (1, 2, 4, 8, 16),
    duration_s: float = 5.0,
    p99_target_ms: float = 50.0,
) -> dict[str, object]:
    """Run (a)-(e) against running services; returns the rows and the summary figures.

    ``pids`` (``gateway``, ``gateway_open``, ``mf``, ``triton``, ``bare_app``) adds CPU ms per
    request per process to every row."""
    rows: list[BenchRow] = []
    rec = f"/v1/recommendations/{{}}?k={k}"
    use_wrk = shutil.which("wrk") is not None
    known = dict(pids or {})
    stack: dict[str, int] = {n: known[n] for n in ("gateway", "mf", "triton") if n in known}
    opened: dict[str, int] = {n: p for n, p in stack.items() if n != "gateway"}
    if "gateway_open" in known:
        opened["gateway"] = known["gateway_open"]
    bare = {"bare_app": known["bare_app"]} if "bare_app" in known else {}

    async def http(name: str, url: str, concurrency: int, procs: dict[str, int]) -> BenchRow:
        meter = CpuMeter({**procs, "driver": SELF})  # httpx runs in this process
        row = await bench_http(
            name,
            url,
            rec.format,
            concurrency=concurrency,
            duration_s=duration_s,
            users=users,
            on_measure=meter.start,
        )
        return meter.finish(row)

    async def measure(name: str, url: str, concurrency: int, procs: dict[str, int]) -> BenchRow:
        if not use_wrk:
            return await http(name, url, concurrency, procs)
        meter = CpuMeter(procs)
        row = await asyncio.to_thread(
            bench_wrk,
            f"{name}, wrk",
            url,
            concurrency=concurrency,
            duration_s=duration_s,
            users=users,
            k=k,
            on_measure=meter.start,
        )
        return meter.finish(row)

    idle = await idle_cpu(known) if known else {}
    if dataset:
        meter = CpuMeter({**stack, "driver": SELF})
        rows.append(
            meter.finish(await bench_features(dataset=dataset, users=users, on_measure=meter.start))
        )
    if triton_url:
        for c in (1, 8):
            meter = CpuMeter({**stack, "driver": SELF})
            row = await bench_triton(
                triton_url,
                concurrency=c,
                duration_s=duration_s,
                users=users,
                k=k,
                on_measure=meter.start,
            )
            rows.append(meter.finish(row))
    # The first concurrency through httpx, between two scrapes of the gateway's own histograms;
    # the bare app right after the gateway at each concurrency (same driver, same conditions).
    before = await server_sums(gateway_url)
    gateway_rows = [await http(PRIMARY, gateway_url, concurrencies[0], stack)]
    after = await server_sums(gateway_url)
    bare_rows = [await http(BARE, bare_url, concurrencies[0], bare)] if bare_url else []
    for c in concurrencies if use_wrk else concurrencies[1:]:
        gateway_rows.append(await measure(PRIMARY, gateway_url, c, stack))
        if bare_url:
            bare_rows.append(await measure(BARE, bare_url, c, bare))
    rows += gateway_rows + bare_rows
    for name, url, procs in (
        ("MF service alone", mf_url, stack),
        ("gateway, breaker held open", open_gateway_url, opened),
    ):
        if not url:
            continue
        for c in (1, 8):
            rows.append(await measure(name, url, c, procs))
    best = best_row(gateway_rows, p99_target_ms)
    summary: dict[str, object] = {
        "best_rps_at_p99_target": round(best.rps, 1) if best else None,
        "best_concurrency": best.concurrency if best else None,
        "p99_target_ms": p99_target_ms,
        "gateway_cpu_ms_per_request": headline_cpu(gateway_rows, best, "gateway"),
        "idle_cpu_ms_per_s": idle,
    }
    if bare_url:
        bare_best = best_row(bare_rows, p99_target_ms)
        summary.update(
            bare_best_rps_at_p99_target=round(bare_best.rps, 1) if bare_best else None,
            bare_best_concurrency=bare_best.concurrency if bare_best else None,
            bare_cpu_ms_per_request=headline_cpu(bare_rows, bare_best, "bare_app"),
            gateway_vs_bare=throughput_ratio(best, bare_best),
        )
    singles = {r.target: r for r in rows if r.concurrency == 1}
    # The same (Python) driver as the Triton and Feast rows: a wrk row's p50 lacks the driver's
    # own time, and subtracting Python-driven upstream p50s from it gave negative overheads.
    g = singles.get(PRIMARY)
    t = singles.get("triton direct (gRPC)")
    f = singles.get("feast online read")
    if g and t:
        upstream = t.p50_ms + (f.p50_ms if f else 0.0)
        summary["gateway_overhead_p50_ms"] = round(g.p50_ms - upstream, 2)
    summary.update(server_side_summary(before, after))
    return {"rows": [asdict(r) for r in rows], "summary": summary}


def best_row(rows: Sequence[BenchRow], p99_target_ms: float) -> BenchRow | None:
    """The highest req/s among error-free rows with p99 <= the target (wrk rows when any)."""
    ok = [r for r in rows if r.p99_ms <= p99_target_ms and r.errors == 0]
    ok = [r for r in ok if "wrk" in r.target] or ok
    return max(ok, key=lambda r: r.rps) if ok else None


def throughput_ratio(gateway: BenchRow | None, bare: BenchRow | None) -> float | None:
    """Gateway best req/s over the bare app's (0.62 = 62%); None when either is unmeasured."""
    if gateway is None or bare is None or bare.rps <= 0:
        return None
    return round(gateway.rps / bare.rps, 3)


def headline_cpu(rows: Sequence[BenchRow], best: BenchRow | None, process: str) -> float | None:
    """CPU ms/req of ``process`` on the best row (else the fastest row); None if unmeasured."""
    row = best or max(rows, key=lambda r: r.rps, default=None)
    return row.cpu_ms_per_req.get(process) if row else None


def _cpu_cells(row: Mapping[str, Any]) -> list[object]:
    cpu: dict[str, float] = row.get("cpu_ms_per_req") or {}
    return [
        cpu.get("gateway", cpu.get("bare_app")),
        cpu.get("mf"),
        cpu.get("triton"),
        cpu.get("driver"),
    ]


def format_table(result: dict[str, object]) -> str:
    """Markdown table of ``bench_serve``'s rows plus its summary line."""
    keys = ("target", "concurrency", "requests", "errors", "rps", "p50_ms", "p99_ms", "served_by")
    rows: list[dict[str, Any]] = result["rows"]  # type: ignore[assignment]
    table = markdown_table(
        [
            *("target", "conc.", "requests", "errors", "req/s", "p50 ms", "p99 ms", "served by"),
            *("gateway/app CPU ms/req", "MF CPU ms/req", "Triton CPU ms/req"),
            "driver CPU ms/req",
        ],
        [[r[key] for key in keys] + _cpu_cells(r) for r in rows],
    )
    return (
        table
        + "\n\nCPU ms/req: user+system CPU of each process (and its children) over the measured "
        "window / requests served in it; the first CPU column is the gateway the row calls, or "
        "the bare app in its rows; driver: the load generator when it runs in this process "
        "(httpx, Triton, Feast). It includes the process's background work (idle_cpu_ms_per_s "
        "in the summary: CPU ms per second with no requests, measured before the rows)."
        "\n\nsummary: " + json.dumps(result["summary"])
    )


def format_baseline(summary: Mapping[str, Any]) -> str:
    """The gateway's primary path against the bare FastAPI app: best req/s, CPU, the ratio."""
    ratio = summary.get("gateway_vs_bare")
    return markdown_table(
        ["service (one uvicorn worker)", "best req/s at p99 target", "conc.", "CPU ms/req"],
        [
            [
                "gateway, primary path",
                summary.get("best_rps_at_p99_target"),
                summary.get("best_concurrency"),
                summary.get("gateway_cpu_ms_per_request"),
            ],
            [
                "bare FastAPI app, same JSON",
                summary.get("bare_best_rps_at_p99_target"),
                summary.get("bare_best_concurrency"),
                summary.get("bare_cpu_ms_per_request"),
            ],
            ["gateway / bare", f"{100 * ratio:.0f}%" if ratio is not None else None, None, None],
        ],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--triton", help="gRPC host:port")
    parser.add_argument("--mf")
    parser.add_argument(
        "--open-gateway", help="a gateway started with GATEWAY_BREAKER_FORCE_OPEN=true"
    )
    parser.add_argument("--bare", help="a bare app (python -m cascade.bench.bare_app) to compare")
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
            bare_url=args.bare,
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
