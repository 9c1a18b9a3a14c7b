"""Benchmark of the MF service alone: a real ``python -m fallback_mf`` process driven open-loop.

``bench_service()`` writes a random ALS artifact of the requested size (default: the ``demo``
scale, 20K users x 3K items x 64 factors), starts the service, and drives it from a SEPARATE
process (``cascade.bench.mf_driver``) at a fixed arrival rate (open loop: request i is due at
``i / rate`` whatever the earlier answers did, and its latency counts from that due time, so a
stalled server cannot hide its queue: no coordinated omission). ``scoring_micro()`` times the
scoring alone at several catalogue sizes (the inline-vs-thread decision in
``fallback_mf.service.api``).

    python -m cascade.bench.mf_service              # 500 req/s for 20 s, prints a table
    python -m cascade.bench.mf_service --rate 800 --duration 10
    python -m cascade.bench.mf_service --cpu 0.5     # under a cgroup quota of half a CPU
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # like the service: single-threaded BLAS

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cascade.runtime.procs import ManagedProcess, free_port
from fallback_mf.schemas import RECOMMENDATIONS_PATH

DEMO_USERS, DEMO_ITEMS, FACTORS, SEEN_PER_USER = 20_000, 3_000, 64, 45


@dataclass(frozen=True)
class BenchResult:
    """Client-side figures (ms, from each request's due time) and the rate achieved."""

    target_rate: float
    achieved_rate: float
    requests: int
    errors: int
    error_kinds: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    n_items: int
    server_cpu_ms_per_request: float  # the MF process's CPU time / requests
    driver_cpu_ms_per_request: float
    load_average_before: float  # 1-minute load of the machine when the run started
    server_p50_le_ms: float  # from the service's own histogram (bucket bound, incl. warm-up)
    server_p99_le_ms: float
    cpu_quota: float | None = None  # CPUs the service was held to (cgroup quota), if any
    throttled: dict[str, float] | None = None  # the quota's cpu.stat over the measured run


def random_model(*, n_users: int, n_items: int, factors: int = FACTORS, seed: int = 0):  # type: ignore[no-untyped-def]
    """An :class:`AlsModel` with random factors, ``SEEN_PER_USER`` seen items per user."""
    from cascade.recommenders import PopularityRecommender, UserItems
    from fallback_mf.model import AlsModel

    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users, dtype=np.int64), SEEN_PER_USER)
    items = rng.zipf(1.3, size=len(users)).astype(np.int64) % n_items
    seen = UserItems.from_pairs(users, items)
    counts = np.bincount(items, minlength=n_items)
    order = np.lexsort((np.arange(n_items), -counts))
    return AlsModel(
        user_factors=rng.standard_normal((n_users, factors)).astype(np.float32) * 0.1,
        item_factors=rng.standard_normal((n_items, factors)).astype(np.float32) * 0.1,
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        seen=seen,
        popular=PopularityRecommender(items=order, counts=counts[order]),
    )


def scoring_micro(
    *, sizes: tuple[int, ...] = (3_000, 20_000, 100_000), k: int = 20, n: int = 300
) -> dict[int, float]:
    """Median microseconds of one ``recommend_one`` of the service's scorer per catalogue size
    (in this process)."""
    from fallback_mf.artifacts import arrays_of
    from fallback_mf.service.scoring import AlsScorer

    out: dict[int, float] = {}
    for n_items in sizes:
        scorer = AlsScorer.from_arrays(arrays_of(random_model(n_users=1_000, n_items=n_items)))
        times = []
        for i in range(n):
            t = time.perf_counter()
            scorer.recommend_one(i % 1_000, k=k)
            times.append(time.perf_counter() - t)
        out[n_items] = float(np.median(times) * 1e6)
    return out


def histogram_quantiles(
    metrics_text: str, *, route: str, qs: tuple[float, ...] = (0.5, 0.99)
) -> list[float]:
    """Upper bucket bounds (ms) holding each quantile of ``mf_request_duration_seconds`` for ``route``."""
    buckets: list[tuple[float, float]] = []
    for line in metrics_text.splitlines():
        if line.startswith("mf_request_duration_seconds_bucket{") and f'route="{route}"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    return [next((1000 * le for le, n in buckets if n >= q * total), float("nan")) for q in qs]


def bench_service(
    *,
    rate: float = 500.0,
    duration_s: float = 20.0,
    n_users: int = DEMO_USERS,
    n_items: int = DEMO_ITEMS,
    k: int = 20,
    warmup_s: float = 2.0,
    work_dir: Path | None = None,
    cpu_quota: float | None = None,
) -> BenchResult:
    """Start the service on a random artifact, warm it up, drive it at ``rate``; see module doc.

    ``cpu_quota``: the service runs under a cgroup quota of that many CPUs
    (``cascade.cpu_quota``; :class:`CpuQuotaError` before anything starts when it cannot)."""
    import psutil

    from cascade.cpu_quota import CpuQuota
    from fallback_mf.artifacts import als_root, save_als

    with contextlib.ExitStack() as stack:
        quota = (
            stack.enter_context(CpuQuota(f"cascade-bench-mf-{os.getpid()}", cpus=cpu_quota))
            if cpu_quota is not None
            else None
        )
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mf-bench-"))
        root = work_dir or Path(tmp)
        artifacts = root / "artifacts"
        save_als(
            random_model(n_users=n_users, n_items=n_items), artifacts_dir=artifacts, version="bench"
        )
        port = free_port()
        env = dict(
            os.environ,
            MF_PORT=str(port),
            MF_ARTIFACTS_DIR=str(als_root(artifacts)),
            MF_RELOAD_INTERVAL_S="0",
        )
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        with ManagedProcess(
            "mf", [sys.executable, "-m", "fallback_mf"], log_path=root / "mf.log", env=env
        ) as proc:
            if quota is not None:
                quota.add(proc.pid)
            proc.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=120)
            driver = [
                sys.executable,
                "-m",
                "cascade.bench.mf_driver",
                f"--port={port}",
                f"--users={n_users}",
                f"--k={k}",
            ]
            subprocess.run(
                [*driver, f"--rate={min(rate, 200.0)}", f"--duration={warmup_s}"],
                check=True,
                capture_output=True,
                timeout=warmup_s + 60,
            )
            server = psutil.Process(proc.pid)
            cpu_before = sum(server.cpu_times()[:2])
            throttled_before = quota.throttled() if quota else {}
            load = os.getloadavg()[0]
            out = subprocess.run(
                [*driver, f"--rate={rate}", f"--duration={duration_s}"],
                check=True,
                capture_output=True,
                text=True,
                timeout=duration_s + 120,
            )
            server_cpu = sum(server.cpu_times()[:2]) - cpu_before
            throttled = (
                {key: round(v - throttled_before[key], 3) for key, v in quota.throttled().items()}
                if quota
                else None
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                server_p50, server_p99 = histogram_quantiles(
                    resp.read().decode(), route=RECOMMENDATIONS_PATH
                )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
    return BenchResult(
        target_rate=rate,
        n_items=n_items,
        server_cpu_ms_per_request=1000 * server_cpu / max(1, figures["requests"]),
        load_average_before=load,
        server_p50_le_ms=server_p50,
        server_p99_le_ms=server_p99,
        cpu_quota=cpu_quota,
        throttled=throttled,
        **figures,
    )


def _main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=DEMO_USERS)
    parser.add_argument("--items", type=int, default=DEMO_ITEMS)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--cpu", type=float, help="hold the service to this many CPUs (cgroup)")
    parser.add_argument(
        "--micro", action="store_true", help="also time scoring alone per catalogue size"
    )
    args = parser.parse_args()
    if args.micro:
        for n_items, us in scoring_micro().items():
            print(f"scoring one user, {n_items:>7,} items: {us:8.1f} us (median)")
    r = bench_service(
        rate=args.rate,
        duration_s=args.duration,
        n_users=args.users,
        n_items=args.items,
        k=args.k,
        cpu_quota=args.cpu,
    )
    print(
        "| service | items | target req/s | achieved req/s | p50 ms | p90 ms | p99 ms | max ms "
        "| errors | server CPU ms/req | server p50/p99 <= ms | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| fallback_mf | {r.n_items:,} | {r.target_rate:.0f} | {r.achieved_rate:.0f} "
        f"| {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.1f} | {r.errors} "
        f"| {r.server_cpu_ms_per_request:.2f} | {r.server_p50_le_ms:g} / {r.server_p99_le_ms:g} "
        f"| {r.load_average_before:.1f} |"
    )
    print(json.dumps(asdict(r)))


if __name__ == "__main__":
    _main()
