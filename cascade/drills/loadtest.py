"""``python -m cascade.drills.loadtest`` (``make loadtest``): Locust, headless, against the local stack.

1. If nothing answers ``/readyz`` on the gateway port, start ``cascade up --scale <scale>`` (its
   other ports chosen free) and wait for it; stop it at the end.
2. Write the known users, most active first, for the locustfile (``CASCADE_LOADTEST_USERS``).
3. Run ``locust --headless`` with the chosen shape, bounded by ``--duration``, loopback only;
   CSV (full history) and HTML reports into ``--out`` (default ``$CASCADE_HOME/reports/loadtest``).
4. Plots and ``summary.md`` from the CSVs (``cascade.drills.report.loadtest_report``), then the
   answers by fallback reason and 503 cause (``cascade.drills.outcomes``, from what the
   locustfile counted) and the gateway's own figures over the run (``cascade.drills.internals``).
5. Events (on by default, ``--no-events`` for recommendations only): each Locust user reports
   an impression batch per answer and a click for 5% of them (``loadtests/locustfile.py``); the
   summary adds event throughput, batches by status (202, 503), the consumer's freshness p50/p99
   over the run and its lag at the end, read from its ``/metrics`` (``--events-port``, 8020).

``--gateway-cpu 0.5`` (``make loadtest GATEWAY_CPU=0.5``): a machine 2-3x slower. The gateway
process (``run/stack.json``, else whoever listens on the port) is held to that many CPUs by a
cgroup quota for the run (``cascade.drills.slow_node``), and the summary says how often the
quota throttled it. When the quota cannot be applied the run stops before any load, exit 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from cascade.cpu_quota import CpuQuotaError
from cascade.runtime.paths import Layout
from cascade.runtime.procs import ManagedProcess, ProcessError, free_port, http_ok

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
SHAPES = ("steady", "ramp", "spike")


@dataclass(frozen=True)
class LoadTestConfig:
    """What to run. ``users`` x ``user_rps`` is the offered load (requests/s)."""

    shape: str = "steady"
    users: int = 20
    user_rps: float = 5.0
    duration_s: float = 60.0
    port: int = 8000
    scale: str = "demo"
    ready_timeout_s: float = 1200.0
    model_repository: Path | None = None  # for `cascade up`; None: its default (triton_models/)
    gateway_cpu: float | None = None  # hold the gateway to this many CPUs (None: no quota)
    events: bool = True  # apps report impressions and clicks (POST /v1/events)
    events_port: int = 8020  # the events consumer's /metrics

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if self.users < 1 or self.user_rps <= 0 or not 1 <= self.duration_s <= 3600:
            raise ValueError("users >= 1, user_rps > 0 and 1 <= duration_s <= 3600 are required")
        if self.gateway_cpu is not None and self.gateway_cpu <= 0:
            raise ValueError(f"gateway_cpu must be positive, got {self.gateway_cpu}")


def write_users(layout: Layout, dataset: str, path: Path) -> Path | None:
    """Known user ids by activity (Zipf ranks) into ``path``; None when the data set is absent."""
    interactions = layout.dataset_dir(dataset) / "interactions.parquet"
    if not interactions.is_file():
        return None
    import pandas as pd

    users = pd.read_parquet(interactions, columns=["user_id"])["user_id"].value_counts().index
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(str(int(u)) for u in users) + "\n")
    return path


def start_stack(*, layout: Layout, config: LoadTestConfig) -> ManagedProcess:
    """``cascade up`` on ``config.port`` (other ports free), ready or ProcessError."""
    env = dict(
        os.environ,
        CASCADE_HOME=str(layout.home),
        CASCADE_GATEWAY_PORT=str(config.port),
        CASCADE_MF_PORT=str(free_port()),
        CASCADE_TRITON_HTTP_PORT=str(free_port()),
        CASCADE_TRITON_GRPC_PORT=str(free_port()),
        CASCADE_TRITON_METRICS_PORT=str(free_port()),
        CASCADE_NATS_PORT=str(free_port()),
        CASCADE_NATS_MONITOR_PORT=str(free_port()),
        CASCADE_EVENTS_PORT=str(config.events_port),
        GATEWAY_LOG_LEVEL=os.environ.get("GATEWAY_LOG_LEVEL", "WARNING"),
    )
    argv = [sys.executable, "-m", "cascade.cli", "up", "--scale", config.scale]
    if config.model_repository is not None:
        argv += ["--model-repository", str(config.model_repository)]
    proc = ManagedProcess("cascade-up", argv, log_path=layout.run_dir / "loadtest-up.log", env=env)
    proc.start()
    proc.wait_ready(
        f"http://127.0.0.1:{config.port}/readyz", timeout=config.ready_timeout_s, interval=1.0
    )
    return proc


def api_key(layout: Layout) -> str | None:
    """``CASCADE_API_KEY``, else the development key ``cascade up`` wrote (``run/dev-api-key``)."""
    key = os.environ.get("CASCADE_API_KEY")
    if key:
        return key
    path = layout.run_dir / "dev-api-key"
    return path.read_text().strip() or None if path.is_file() else None


def run_locust(
    *,
    url: str,
    config: LoadTestConfig,
    out_dir: Path,
    users_file: Path | None,
    key: str | None = None,
) -> Path:
    """Locust headless; returns the CSV prefix."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / "locust"
    (out_dir / "outcomes.json").unlink(missing_ok=True)  # never a previous run's counts
    (out_dir / "events.json").unlink(missing_ok=True)
    env = dict(
        os.environ,
        CASCADE_LOAD_SHAPE=config.shape,
        CASCADE_USERS=str(config.users),
        CASCADE_USER_RPS=str(config.user_rps),
        CASCADE_DURATION_S=str(config.duration_s),
        CASCADE_LOADTEST_OUTCOMES=str(out_dir / "outcomes.json"),
        CASCADE_EVENTS="1" if config.events else "0",
        CASCADE_LOADTEST_EVENTS=str(out_dir / "events.json"),
    )
    if users_file is not None:
        env["CASCADE_LOADTEST_USERS"] = str(users_file)
    if key:
        env["CASCADE_API_KEY"] = key
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
        "-u", str(config.users), "-r", str(config.users), "-t", f"{int(config.duration_s)}s",
        "--csv", str(prefix), "--csv-full-history", "--html", str(out_dir / "locust.html"),
        "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5",
    ]  # fmt: skip
    logger.info(
        "locust: %s shape, %d users x %.1f rps, %.0fs",
        config.shape,
        config.users,
        config.user_rps,
        config.duration_s,
    )
    result = subprocess.run(
        argv,
        env=env,
        cwd=REPO_ROOT,
        timeout=config.duration_s + 120,
        capture_output=True,
        text=True,
    )
    (out_dir / "locust.log").write_text(result.stdout + result.stderr)
    # Locust exits 1 when some requests failed: the report says how many; only a crash stops us.
    if result.returncode not in (0, 1) or not Path(f"{prefix}_stats.csv").is_file():
        raise ProcessError(f"locust failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return prefix


def loadtest(*, config: LoadTestConfig, layout: Layout, out_dir: Path) -> Path:
    """Run the whole load test; returns the summary's path. CpuQuotaError: no quota possible."""
    from cascade.drills import event_figures, internals
    from cascade.drills.report import loadtest_report
    from cascade.drills.slow_node import GatewayQuota, cpu_seconds, describe, find_gateway_pid

    url = f"http://127.0.0.1:{config.port}"
    stack = None
    extra: list[str] = []
    with contextlib.ExitStack() as held:
        # The group first: a machine that cannot hold the quota stops here, before any load.
        quota = held.enter_context(GatewayQuota(config.gateway_cpu)) if config.gateway_cpu else None
        if not http_ok(f"{url}/readyz"):
            logger.info("nothing ready at %s: starting `cascade up --scale %s`", url, config.scale)
            stack = start_stack(layout=layout, config=config)
        try:
            pid: int | None = None
            if quota is not None:
                pid = find_gateway_pid(layout, config.port)
                quota.add(pid)
                logger.info("gateway pid %d held to %g CPU (%s)", pid, quota.cpus, quota.quota.path)
            else:  # its CPU use is still worth a line
                with contextlib.suppress(CpuQuotaError):
                    pid = find_gateway_pid(layout, config.port)
            users = write_users(layout, config.scale, out_dir / "users.txt")
            before = internals.scrape(url)
            consumer_url = f"http://127.0.0.1:{config.events_port}"
            consumer_before = event_figures.scrape_consumer(consumer_url) if config.events else None
            started, cpu_before = time.monotonic(), cpu_seconds([pid] if pid else [])
            prefix = run_locust(
                url=url, config=config, out_dir=out_dir, users_file=users, key=api_key(layout)
            )
            took = time.monotonic() - started
            logger.info("locust ran %.0fs", took)
            extra.append(internals.markdown(before, internals.scrape(url)))
            if config.events:
                extra.append(
                    event_figures.markdown(
                        counts_path=out_dir / "events.json",
                        before=consumer_before,
                        after=event_figures.scrape_consumer(consumer_url),
                        duration_s=took,
                    )
                )
            if quota is None and pid is not None:
                cores = (cpu_seconds([pid]) - cpu_before) / took
                extra.append(f"- gateway CPU (no quota): {cores:.2f} cores over {took:.0f} s\n")
            if quota is not None:
                line = describe(quota.figures())
                logger.info("%s", line)
                extra.append(f"## Slow node\n\n- {line}\n")
                with contextlib.suppress(CpuQuotaError):  # gone: the load test says so
                    if find_gateway_pid(layout, config.port) not in quota.pids:
                        extra.append("- the gateway restarted during the run: it then ran free\n")
        finally:
            if stack is not None:
                stack.stop(grace=20)
    summary = loadtest_report(
        csv_prefix=prefix, out_dir=out_dir, title=f"Cascade load test ({config.shape})"
    )
    extra.insert(0, _outcomes_section(out_dir / "outcomes.json"))
    summary.write_text(summary.read_text().rstrip("\n") + "\n\n" + "\n".join(extra))
    return summary


def _outcomes_section(path: Path) -> str:
    from cascade.drills.outcomes import markdown, read_outcomes

    if not path.is_file():
        return f"## Answers by fallback reason and 503 cause\n\nnot recorded ({path} missing).\n"
    return markdown(read_outcomes(path))


def main(
    shape: str = typer.Option("steady", help="Load shape: steady, ramp or spike."),
    users: int = typer.Option(20, help="Locust users (the spike multiplies them)."),
    user_rps: float = typer.Option(5.0, help="Requests/s per user."),
    duration: float = typer.Option(60.0, help="Seconds of load."),
    port: int = typer.Option(8000, envvar="CASCADE_GATEWAY_PORT", help="Gateway port."),
    scale: str = typer.Option("demo", help="Scale `cascade up` builds when nothing answers."),
    out: str = typer.Option("", help="Report folder (default $CASCADE_HOME/reports/loadtest)."),
    model_repository: str = typer.Option("", help="Triton repository for `cascade up`."),
    gateway_cpu: float = typer.Option(
        0.0, help="Hold the gateway to this many CPUs for the run (a slower machine); 0: no quota."
    ),
    events: bool = typer.Option(
        True, "--events/--no-events", help="Apps also report impressions and clicks."
    ),
    events_port: int = typer.Option(
        8020, envvar="CASCADE_EVENTS_PORT", help="The events consumer's port (its /metrics)."
    ),
) -> None:
    """Locust against the local stack (started if needed); CSV, HTML, plots and summary.md."""
    try:
        config = LoadTestConfig(
            shape=shape,
            users=users,
            user_rps=user_rps,
            duration_s=duration,
            port=port,
            scale=scale,
            model_repository=Path(model_repository) if model_repository else None,
            gateway_cpu=gateway_cpu or None,
            events=events,
            events_port=events_port,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    layout = Layout.from_env()
    out_dir = Path(out) if out else layout.reports_dir / "loadtest"
    try:
        summary = loadtest(config=config, layout=layout, out_dir=out_dir)
    except CpuQuotaError as exc:
        typer.echo(f"loadtest: cannot hold the gateway to {gateway_cpu:g} CPU: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    except (ProcessError, subprocess.TimeoutExpired, FileNotFoundError) as exc:
        typer.echo(f"loadtest failed: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(summary.read_text())
    typer.echo(f"report: {summary}")


if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("CASCADE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    typer.run(main)
