"""``make bench-serve``: the serving benchmark on a real local stack, in one run.

1. ``cascade up`` (``python -m cascade.stack``) on free ports at the chosen scale (default
   ``demo``): Triton, the MF service and the gateway; data and models are built when missing.
   ``cascade.bench.serve_stack.run_stack_bench`` does steps 1 to 3.
2. A second gateway with ``GATEWAY_BREAKER_FORCE_OPEN=true`` (row d: features + ALS).
3. ``cascade.bench.gateway.bench_serve``: (a) direct Triton, (b) the gateway's primary path at several
   concurrencies (wrk when installed), (c) the MF service alone, (d) the breaker held open,
   plus the Feast online read.
4. Everything is stopped; then ``fallback_mf.service_bench.bench_service``: the MF service
   alone, open loop at 500 requests/s.

Targets (issue 4): the gateway adds at most 3 ms at p50 over the sum of its upstream calls; it
serves at least 500 requests/s at p99 <= 50 ms; the MF service has p99 <= 10 ms at 500 req/s.
Figures that hold on any machine: the gateway's best req/s at p99 <= 50 ms is at least half a
bare FastAPI app's (``cascade.bench.bare_app``, same driver, same run), and the gateway spends at
most 1 ms of CPU per request on the primary path (every row has CPU ms/req per process).

``--gateway-cpu 0.5`` holds both gateways and the bare app to half a CPU each (a cgroup quota,
``cascade.cpu_quota``: a slow node on a fast machine), ``--mf-cpu 0.5`` the MF service of the
open-loop row; the throttled time is in the footer. A quota that cannot be applied (no cgroup
CPU controller, not root) fails the run before anything starts, exit status 1.

    python -m cascade.bench.serve --scale demo --duration 5
    python -m cascade.bench.serve --gateway-cpu 0.5 --mf-cpu 0.5     # make bench-serve GATEWAY_CPU=0.5
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cascade.bench.cpu_meter import check_quota, quota_notes
from cascade.bench.serve_stack import run_stack_bench
from cascade.bench.table import machine_footer, markdown_table, met, reports_dir, write_report
from cascade.cpu_quota import CpuQuotaError

logger = logging.getLogger(__name__)

OVERHEAD_TARGET_MS, RPS_TARGET, P99_TARGET_MS, MF_P99_TARGET_MS = 3.0, 500.0, 50.0, 10.0
RATIO_TARGET_PCT, CPU_TARGET_MS = 50.0, 1.0


def targets(serve: dict[str, Any] | None, mf: dict[str, Any] | None) -> list[list[object]]:
    """Rows ``[target, measured, goal, met]`` for the issue's serving targets."""
    s: dict[str, Any] = (serve or {}).get("summary", {})
    overhead = s.get("gateway_overhead_p50_ms")
    server_overhead = s.get("server_side_overhead_mean_ms")
    best = s.get("best_rps_at_p99_target")
    ratio = s.get("gateway_vs_bare")
    ratio_pct = round(100 * ratio, 1) if ratio is not None else None
    cpu = s.get("gateway_cpu_ms_per_request")
    mf_p99 = mf.get("p99_ms") if mf else None
    return [
        [
            "gateway p50 over (Feast read p50 + Triton p50), concurrency 1",
            overhead,
            f"<= {OVERHEAD_TARGET_MS:g} ms",
            met(overhead, OVERHEAD_TARGET_MS),
        ],
        [
            "gateway own time, server-side mean (request - features - primary)",
            server_overhead,
            f"<= {OVERHEAD_TARGET_MS:g} ms",
            met(server_overhead, OVERHEAD_TARGET_MS),
        ],
        [
            f"gateway highest req/s with p99 <= {P99_TARGET_MS:g} ms "
            f"(at concurrency {s.get('best_concurrency')})",
            best,
            f">= {RPS_TARGET:g} req/s",
            met(best, RPS_TARGET, below=False),
        ],
        [
            "gateway best req/s over a bare FastAPI app's, % (same driver, same run; "
            f"concurrency {s.get('best_concurrency')} vs {s.get('bare_best_concurrency')})",
            ratio_pct,
            f">= {RATIO_TARGET_PCT:g}%",
            met(ratio_pct, RATIO_TARGET_PCT, below=False),
        ],
        [
            f"gateway CPU ms per request, primary path (at concurrency {s.get('best_concurrency')})",
            cpu,
            f"<= {CPU_TARGET_MS:g} ms",
            met(cpu, CPU_TARGET_MS),
        ],
        [
            f"MF service p99 at {mf['target_rate']:.0f} req/s open loop"
            if mf
            else "MF service p99",
            mf_p99,
            f"<= {MF_P99_TARGET_MS:g} ms",
            met(mf_p99, MF_P99_TARGET_MS),
        ],
    ]


def render(serve: dict[str, Any] | None, mf: dict[str, Any] | None, *, notes: list[str]) -> str:
    """The markdown report: bench_serve's table, the MF service row, the targets."""
    from cascade.bench.gateway import format_baseline, format_table

    parts = ["## Serving benchmark"]
    if serve:
        parts.append(format_table(serve))
        parts.append(
            f"### Gateway against a bare FastAPI app (p99 <= {P99_TARGET_MS:g} ms)\n\n"
            + format_baseline(serve.get("summary", {}))
        )
    if mf:
        parts.append(
            markdown_table(
                [
                    "MF service alone",
                    "items",
                    "target req/s",
                    "achieved req/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "errors",
                    "server CPU ms/req",
                    "CPU quota",
                ],
                [
                    [
                        "fallback_mf (open loop)",
                        mf["n_items"],
                        mf["target_rate"],
                        mf["achieved_rate"],
                        mf["p50_ms"],
                        mf["p90_ms"],
                        mf["p99_ms"],
                        mf["max_ms"],
                        mf["errors"],
                        mf["server_cpu_ms_per_request"],
                        mf.get("cpu_quota"),
                    ]
                ],
            )
        )
    parts.append(
        "### Targets\n\n"
        + markdown_table(["target", "measured", "goal", "met"], targets(serve, mf))
    )
    parts += quota_notes(serve, mf)
    parts += notes
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run both benchmarks, print the report and write it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="demo", choices=("tiny", "demo", "large"))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured row")
    parser.add_argument("--concurrencies", default="1,2,4,8,16")
    parser.add_argument("--users", type=int, default=2000, help="user ids 0..N-1 are requested")
    parser.add_argument("--mf-rate", type=float, default=500.0)
    parser.add_argument("--mf-duration", type=float, default=20.0)
    parser.add_argument("--ready-timeout", type=float, default=1800.0)
    parser.add_argument(
        "--model-repository", type=Path, help="Triton model repository (default: triton_models/)"
    )
    parser.add_argument("--skip-stack", action="store_true", help="only the MF service bench")
    parser.add_argument(
        "--gateway-cpu", type=float, help="hold each gateway and the bare app to this many CPUs"
    )
    parser.add_argument("--mf-cpu", type=float, help="hold the open-loop MF service to this")
    parser.add_argument(
        "--name", help="report file name (default serve, serve-gateway-cpu0.5 with a quota, ...)"
    )
    args = parser.parse_args(argv)
    try:
        concurrencies = tuple(int(c) for c in args.concurrencies.split(","))
    except ValueError:
        parser.error(f"--concurrencies must be a comma list of integers: {args.concurrencies!r}")
    if args.users < 1 or args.duration <= 0 or not concurrencies or min(concurrencies) < 1:
        parser.error("--users, --duration and every concurrency must be positive")
    for flag, cpus in (("--gateway-cpu", args.gateway_cpu), ("--mf-cpu", args.mf_cpu)):
        problem = check_quota(flag, cpus)
        if problem:
            print(problem, file=sys.stderr)
            return 1
    name = args.name or "-".join(
        ["serve"]
        + ([f"gateway-cpu{args.gateway_cpu:g}"] if args.gateway_cpu is not None else [])
        + ([f"mf-cpu{args.mf_cpu:g}"] if args.mf_cpu is not None else [])
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # httpx logs every request at INFO: that would cost the load generator CPU per request.
    for noisy in ("httpx", "httpcore", "feast"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from cascade.bench.mf_service import bench_service

    # The Feast read row runs in this process: the same online store as the stack's.
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    load = os.getloadavg()
    serve: dict[str, Any] | None = None
    errors: list[str] = []
    if not args.skip_stack:
        try:
            serve = run_stack_bench(
                scale=args.scale,
                duration_s=args.duration,
                concurrencies=concurrencies,
                users=range(args.users),
                ready_timeout_s=args.ready_timeout,
                log_dir=reports_dir(),
                model_repository=args.model_repository,
                p99_target_ms=P99_TARGET_MS,
                gateway_cpu=args.gateway_cpu,
            )
        except CpuQuotaError as exc:
            print(f"bench-serve: --gateway-cpu {args.gateway_cpu:g}: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # a harness: report what failed, still run the MF bench
            errors.append(f"stack benchmark failed: {type(exc).__name__}: {exc}")
            logger.exception("stack benchmark failed")
    logger.info("bench-serve: MF service alone at %s req/s", args.mf_rate)
    try:
        mf = asdict(
            bench_service(rate=args.mf_rate, duration_s=args.mf_duration, cpu_quota=args.mf_cpu)
        )
    except CpuQuotaError as exc:
        print(f"bench-serve: --mf-cpu {args.mf_cpu:g}: {exc}", file=sys.stderr)
        return 1
    notes = [
        f"Scale {args.scale}; closed loop, {args.duration:g} s per row after a warm-up; "
        f"users 0..{args.users - 1}; load generator ({'wrk' if shutil.which('wrk') else 'httpx'}) "
        "on the same CPUs as Redis, Triton, the MF service and both gateways. The MF-alone "
        f"row is an open loop at {args.mf_rate:g} req/s for {args.mf_duration:g} s on a random "
        "demo-size artifact, after the stack is stopped. Same driver (httpx or wrk) and "
        "concurrencies for the gateway's primary path and the bare app, one right after the "
        "other.",
        *[f"**{e}**" for e in errors],
        machine_footer(load_before=load),
    ]
    markdown = render(serve, mf, notes=notes)
    print(markdown)
    md, js = write_report(
        name,
        markdown=markdown,
        data={
            "serve": serve,
            "mf_service": mf,
            "errors": errors,
            "load_before": load,
            "load_after": os.getloadavg(),
            "args": vars(args),
        },
    )
    print(f"\nwritten: {md}, {js}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
