"""``python -m cascade.drills`` (``make drill``): start the drill stack, run D1-D10 and D12, print
the table. ``--consumer-down-s 10``: D12's outage shorter than its 60 s (a quick run).

Exit code 0 when every drill passed, 1 when one failed, 2 on bad input (or a ``--gateway-cpu``
quota this machine cannot apply). The table and ``results.json`` go to ``--out`` (default
``$CASCADE_HOME/reports/drills``). ``--gateway-cpu 0.5`` (``make drill GATEWAY_CPU=0.5``): the
stack's gateway held to half a CPU (``cascade.drills.slow_node``); the report says how often the
quota throttled it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import replace
from pathlib import Path

import typer

from cascade.drills.analysis import DrillResult
from cascade.runtime.paths import Layout
from cascade.runtime.redact import redact_root_handlers

logger = logging.getLogger(__name__)


async def run(
    *,
    names: list[str],
    scale: str,
    home: Path,
    out_dir: Path,
    rate: float,
    quick: bool,
    gateway_cpu: float | None = None,
    consumer_down_s: float | None = None,
) -> list[DrillResult]:
    """Start the stack, run ``names``, write the report, stop the stack."""
    from cascade.drills.drills import Plan, run_drills
    from cascade.drills.report import drill_table, write_drill_report
    from cascade.drills.slow_node import GatewayQuota, describe
    from cascade.drills.stack import DrillStack

    plan = Plan(rate=rate)
    if quick:
        plan = replace(Plan.ci(), rate=rate, spike_s=10.0, otlp_s=8.0, otlp_base_s=4.0, slow_s=10.0)
    if consumer_down_s is not None:
        plan = replace(plan, consumer_down_s=consumer_down_s)
    with contextlib.ExitStack() as held:
        quota = held.enter_context(GatewayQuota(gateway_cpu)) if gateway_cpu else None
        stack = DrillStack(home=home, scale=scale, gateway_quota=quota)
        try:
            await stack.start()
            results = await run_drills(stack.target(), names, plan=plan)
            throttling = describe(quota.figures()) if quota is not None else ""
        finally:
            await stack.stop()
    print(drill_table(results))
    path = write_drill_report(results, out_dir)
    if throttling:
        print(throttling)
        path.write_text(path.read_text() + f"\n- {throttling}\n")
    print(f"report: {path}")
    return results


def main(
    only: str = typer.Option("", help="Comma-separated drills to run (default: D1..D9)."),
    scale: str = typer.Option("tiny", help="Synthetic data scale of the drill stack."),
    rate: float = typer.Option(
        50.0, help="Load during the drills, requests/s (D7 and D8 have their own)."
    ),
    quick: bool = typer.Option(False, help="Short durations (the CI plan) for a smoke run."),
    out: str = typer.Option("", help="Report folder (default $CASCADE_HOME/reports/drills)."),
    gateway_cpu: float = typer.Option(
        0.0, help="Hold the gateway to this many CPUs (a slower machine); 0: no quota."
    ),
    consumer_down_s: float = typer.Option(
        0.0, help="D12: how long the events consumer stays down (0: the plan's, 60 s; quick 10 s)."
    ),
) -> None:
    """Run the fault drills D1-D10 and D12 against a stack with fault proxies; PASS/FAIL each."""
    from cascade.drills.drills import DRILLS
    from cascade.drills.slow_node import CpuQuotaError

    names = [n.strip().upper() for n in only.split(",") if n.strip()] or list(DRILLS)
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        raise typer.BadParameter(f"unknown drills {unknown}; known: {', '.join(DRILLS)}")
    if rate <= 0:
        raise typer.BadParameter("--rate must be positive")
    if consumer_down_s < 0:
        raise typer.BadParameter("--consumer-down-s must be positive (0: the plan's)")
    if gateway_cpu < 0:
        raise typer.BadParameter("--gateway-cpu must be positive (0: no quota)")
    layout = Layout.from_env()
    out_dir = Path(out) if out else layout.reports_dir / "drills"
    try:
        results = asyncio.run(
            run(
                names=names,
                scale=scale,
                home=layout.home / "drills",
                out_dir=out_dir,
                rate=rate,
                quick=quick,
                gateway_cpu=gateway_cpu or None,
                consumer_down_s=consumer_down_s or None,
            )
        )
    except CpuQuotaError as exc:
        typer.echo(f"drills: cannot hold the gateway to {gateway_cpu:g} CPU: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    raise typer.Exit(code=0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("CASCADE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request costs CPU
    redact_root_handlers()  # as the cascade CLI: no admin key or password in the drill log
    typer.run(main)
