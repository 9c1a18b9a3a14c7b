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

The load generator shares the CPUs with what it measures, so absolute numbers are pessimistic.
``python -m cascade.bench.gateway --gateway URL --triton HOST:PORT --mf URL [--open-gateway URL]``
prints the table (markdown) and writes JSON when ``--json PATH`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

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


async def _closed_loop(
    call: Callable[[int], Awaitable[str]],
    *,
    concurrency: int,
    duration_s: float,
    users: Sequence[int],
) -> tuple[list[float], int, dict[str, int]]:
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


def _row(
    target: str,
    concurrency: int,
    duration_s: float,
    lat: list[float],
    errors: int,
    tiers: dict[str, int],
) -> BenchRow:
    arr = np.asarray(lat) * 1000 if lat else np.asarray([float("nan")])
    top = max(tiers, key=lambda t: tiers[t]) if tiers else ""
    share = f"{top} {100 * tiers.get(top, 0) / max(1, sum(tiers.values())):.0f}%" if top else ""
    return BenchRow(
        target=target,
        concurrency=concurrency,
        requests=len(lat),
        errors=errors,
        rps=len(lat) / duration_s,
        p50_ms=float(np.percentile(arr, 50)),
        p99_ms=float(np.percentile(arr, 99)),
        served_by=share,
    )


async def _bench_http(
    target: str,
    base_url: str,
    path: Callable[[int], str],
    *,
    concurrency: int,
    duration_s: float,
    users: Sequence[int],
    warmup_s: float = 1.0,
) -> BenchRow:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0, limits=limits) as client:

        async def call(user: int) -> str:
            r = await client.get(path(user))
            r.raise_for_status()
            return str(r.headers.get("X-Served-By", "ok"))

        await _closed_loop(call, concurrency=concurrency, duration_s=warmup_s, users=users)
        lat, errors, tiers = await _closed_loop(
            call, concurrency=concurrency, duration_s=duration_s, users=users
        )
    return _row(target, concurrency, duration_s, lat, errors, tiers)


_WRK_SCRIPT = """
local lo, hi, k = %d, %d, %d
request = function()
  return wrk.format("GET", "/v1/recommendations/" .. math.random(lo, hi) .. "?k=" .. k)
end
"""


def _wrk_ms(text: str, label: str) -> float:
    match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _bench_wrk(
    target: str, base_url: str, *, concurrency: int, duration_s: float, users: Sequence[int], k: int
) -> BenchRow:
    """The same closed loop with ``wrk`` (C, one thread): far less CPU than a Python client."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT % (min(users), max(users), k))
    try:
        subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", "-d1s", "-s", script.name, base_url],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # warm-up
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(duration_s))}s",
                "--latency",
                "-s",
                script.name,
                base_url,
            ],
            capture_output=True,
            text=True,
            timeout=duration_s + 30,
            check=False,
        ).stdout
    finally:
        Path(script.name).unlink(missing_ok=True)
    found_requests = re.search(r"(\d+) requests in", out)
    found_rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = int(found_requests.group(1)) if found_requests else 0
    rps = float(found_rps.group(1)) if found_rps else 0.0
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += (
        sum(
            int(n)
            for n in re.findall(
                r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
            )[0]
        )
        if "Socket errors" in out
        else 0
    )
    return BenchRow(
        target=target,
        concurrency=concurrency,
        requests=requests,
        errors=errors,
        rps=rps,
        p50_ms=_wrk_ms(out, "50%"),
        p99_ms=_wrk_ms(out, "99%"),
        served_by="wrk",
    )


async def _bench_triton(
    url: str, *, concurrency: int, duration_s: float, users: Sequence[int], k: int
) -> BenchRow:
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
        await _closed_loop(call, concurrency=concurrency, duration_s=1.0, users=users)
        lat, errors, tiers = await _closed_loop(
            call, concurrency=concurrency, duration_s=duration_s, users=users
        )
    finally:
        await client.close()
    return _row("triton direct (gRPC)", concurrency, duration_s, lat, errors, tiers)


async def _bench_features(*, dataset: str, users: Sequence[int], n: int = 500) -> BenchRow:
    from cascade.runtime.paths import Layout
    from gateway.tiers.features import FeastFeatureReader

    reader = await asyncio.to_thread(
        FeastFeatureReader.open, layout=Layout.from_env(), dataset=dataset, socket_timeout_s=0.1
    )
    await reader.start()
    lat: list[float] = []
    try:
        for i in range(n):
            started = time.perf_counter()
            await reader.read(int(users[i % len(users)]), timeout_s=1.0)
            lat.append(time.perf_counter() - started)
    finally:
        await reader.close()
    total = sum(lat)
    return _row("feast online read", 1, total, lat, 0, {"features": n})


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
    if dataset:
        rows.append(await _bench_features(dataset=dataset, users=users))
    if triton_url:
        rows.append(
            await _bench_triton(triton_url, concurrency=1, duration_s=duration_s, users=users, k=k)
        )
        rows.append(
            await _bench_triton(triton_url, concurrency=8, duration_s=duration_s, users=users, k=k)
        )
    before = await _server_sums(gateway_url)
    gateway_rows = []
    for c in concurrencies[:1]:
        row = await _bench_http(
            "gateway (primary path)",
            gateway_url,
            rec.format,
            concurrency=c,
            duration_s=duration_s,
            users=users,
        )
        gateway_rows.append(row)
    after = await _server_sums(gateway_url)
    use_wrk = shutil.which("wrk") is not None
    for c in concurrencies if use_wrk else concurrencies[1:]:
        if use_wrk:
            row = await asyncio.to_thread(
                _bench_wrk,
                "gateway (primary path), wrk",
                gateway_url,
                concurrency=c,
                duration_s=duration_s,
                users=users,
                k=k,
            )
        else:
            row = await _bench_http(
                "gateway (primary path)",
                gateway_url,
                rec.format,
                concurrency=c,
                duration_s=duration_s,
                users=users,
            )
        gateway_rows.append(row)
    rows += gateway_rows
    for name, url in (
        ("MF service alone", mf_url),
        ("gateway, breaker held open", open_gateway_url),
    ):
        if not url:
            continue
        for c in (1, 8):
            if use_wrk:
                rows.append(
                    await asyncio.to_thread(
                        _bench_wrk,
                        f"{name}, wrk",
                        url,
                        concurrency=c,
                        duration_s=duration_s,
                        users=users,
                        k=k,
                    )
                )
            else:
                rows.append(
                    await _bench_http(
                        name, url, rec.format, concurrency=c, duration_s=duration_s, users=users
                    )
                )
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
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    if delta.get("request_count"):
        per = {
            key: 1000 * delta[key] / max(delta[key.replace("_sum", "_count")], 1)
            for key in delta
            if key.endswith("_sum")
        }
        summary["server_side_mean_ms"] = {k: round(v, 2) for k, v in per.items()}
        summary["server_side_overhead_mean_ms"] = round(
            per.get("request_sum", 0.0) - per.get("feature_sum", 0.0) - per.get("primary_sum", 0.0),
            2,
        )
    return {"rows": [asdict(r) for r in rows], "summary": summary}


async def _server_sums(gateway_url: str) -> dict[str, float]:
    """Sums and counts of the gateway's own histograms: request, feature read, primary call."""
    wanted = {
        'gateway_request_seconds_sum{route="/v1/recommendations/{user_id}",tier="two_tower"}': "request_sum",
        'gateway_request_seconds_count{route="/v1/recommendations/{user_id}",tier="two_tower"}': "request_count",
        "gateway_feature_read_seconds_sum": "feature_sum",
        "gateway_feature_read_seconds_count": "feature_count",
        'gateway_upstream_seconds_sum{outcome="ok",tier="two_tower"}': "primary_sum",
        'gateway_upstream_seconds_count{outcome="ok",tier="two_tower"}': "primary_count",
    }
    async with httpx.AsyncClient(base_url=gateway_url, timeout=5.0) as client:
        text = (await client.get("/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            out[wanted[name]] = float(value)
    return out


def format_table(result: dict[str, object]) -> str:
    """Markdown table of ``bench_serve``'s rows plus its summary line."""
    lines = [
        "| target | conc. | requests | errors | req/s | p50 ms | p99 ms | served by |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {r['target']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['rps']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['served_by']} |"
        )
    lines.append("")
    lines.append("summary: " + json.dumps(result["summary"]))
    return "\n".join(lines)


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
