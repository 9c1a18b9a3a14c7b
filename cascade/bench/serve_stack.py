"""The real local stack of ``make bench-serve``: started, measured by ``bench_serve``, stopped.

``cascade up`` (``python -m cascade.stack``) on free ports at the chosen scale (Triton, the MF
service and the gateway; data and models are built when missing), plus a second gateway with
``GATEWAY_BREAKER_FORCE_OPEN=true`` (row d: features + ALS) and the bare FastAPI app
(``cascade.bench.bare_app``, rows e). No API keys and no OTLP exporter: neither is what is
measured. With ``gateway_cpu``, both gateways and the bare app run under a cgroup CPU quota
(``cascade.cpu_quota``), each in its own group, and the throttled time is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from cascade.bench.cpu_meter import stack_pids, throttle_delta
from cascade.cpu_quota import CpuQuota
from cascade.runtime.paths import Layout
from cascade.runtime.procs import ManagedProcess, ProcessError, free_port, http_ok

logger = logging.getLogger(__name__)


def _wait_ready(urls: dict[str, str], procs: list[ManagedProcess], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = dict(urls)
    while pending:
        pending = {name: url for name, url in pending.items() if not http_ok(url)}
        for proc in procs:
            if not proc.running():
                raise ProcessError(f"{proc.name} exited before ready:\n{proc.log_tail()}")
        if pending and time.monotonic() > deadline:
            raise ProcessError(f"not ready after {timeout_s:.0f} s: {sorted(pending)}")
        time.sleep(1.0)


def run_stack_bench(
    *,
    scale: str,
    duration_s: float,
    concurrencies: tuple[int, ...],
    users: range,
    ready_timeout_s: float,
    log_dir: Path,
    p99_target_ms: float,
    model_repository: Path | None = None,
    gateway_cpu: float | None = None,
) -> dict[str, Any]:
    """Start the stack, the breaker-open gateway and the bare app, run ``bench_serve``, stop all.

    ``gateway_cpu``: both gateways and the bare app each get a cgroup CPU quota of that many CPUs
    (created before anything starts: :class:`CpuQuotaError` when it cannot be applied)."""
    from cascade.bench.gateway import bench_serve

    host = "127.0.0.1"
    ports = {n: free_port() for n in ("gw", "mf", "th", "tg", "tm", "open", "bare")}
    # No API keys on the benchmark's own stack: auth is not what is measured here.
    env = dict(os.environ, GATEWAY_AUTH_ENABLED="false")
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)  # no collector here: do not time failed exports
    layout = Layout.from_env()
    stack = ManagedProcess(
        "cascade-up",
        [
            sys.executable,
            "-m",
            "cascade.stack",
            "--scale",
            scale,
            "--gateway-port",
            str(ports["gw"]),
            "--mf-port",
            str(ports["mf"]),
            "--triton-http-port",
            str(ports["th"]),
            "--triton-grpc-port",
            str(ports["tg"]),
            "--triton-metrics-port",
            str(ports["tm"]),
            *(["--model-repository", str(model_repository)] if model_repository else []),
        ],
        log_path=log_dir / "serve-stack.log",
        env=env,
    )
    open_env = dict(
        env,
        CASCADE_HOME=str(layout.home),
        OPENBLAS_NUM_THREADS="1",
        GATEWAY_HOST=host,
        GATEWAY_PORT=str(ports["open"]),
        GATEWAY_DATASET=scale,
        GATEWAY_MF_URL=f"http://{host}:{ports['mf']}",
        GATEWAY_ARTIFACTS_DIR=str(layout.artifacts_dir),
        GATEWAY_TRITON_URL=f"{host}:{ports['tg']}",
        GATEWAY_BREAKER_FORCE_OPEN="true",
    )
    open_gw = ManagedProcess(
        "gateway-open",
        [sys.executable, "-m", "gateway"],
        log_path=log_dir / "serve-gateway-open.log",
        env=open_env,
    )
    bare = ManagedProcess(
        "bare-app",
        [
            sys.executable,
            "-m",
            "cascade.bench.bare_app",
            "--host",
            host,
            "--port",
            str(ports["bare"]),
        ],
        log_path=log_dir / "serve-bare-app.log",
        env=env,
    )
    gw, mf = f"http://{host}:{ports['gw']}", f"http://{host}:{ports['mf']}"
    bare_url = f"http://{host}:{ports['bare']}"
    with contextlib.ExitStack() as quotas:  # left after the processes are stopped
        groups: dict[str, CpuQuota] = {}
        for name in ("gateway", "gateway_open", "bare_app"):
            if gateway_cpu is not None:
                quota = CpuQuota(f"cascade-bench-{name}-{os.getpid()}", cpus=gateway_cpu)
                groups[name] = quotas.enter_context(quota)
        try:
            stack.start()
            logger.info("bench-serve: starting the %s stack (log %s)", scale, stack.log_path)
            _wait_ready(
                {
                    "gateway": gw + "/readyz",
                    "mf": mf + "/readyz",
                    "triton": f"http://{host}:{ports['th']}/v2/models/two_tower/ready",
                },
                [stack],
                timeout_s=ready_timeout_s,
            )
            open_gw.start()
            bare.start()
            _wait_ready(
                {
                    "gateway-open": f"http://{host}:{ports['open']}/readyz",
                    "bare-app": bare_url + "/v1/recommendations/0",
                },
                [open_gw, bare],
                timeout_s=120,
            )
            pids = {**stack_pids(stack.pid), "gateway_open": open_gw.pid, "bare_app": bare.pid}
            for name, group in groups.items():
                if name not in pids:
                    raise ProcessError(f"no {name} process under cascade up: {pids}")
                group.add(pids[name])
            throttled_before = {name: q.throttled() for name, q in groups.items()}
            logger.info("bench-serve: stack ready %s; measuring (%s s per row)", pids, duration_s)
            result = asyncio.run(
                bench_serve(
                    gateway_url=gw,
                    triton_url=f"{host}:{ports['tg']}",
                    mf_url=mf,
                    open_gateway_url=f"http://{host}:{ports['open']}",
                    bare_url=bare_url,
                    pids=pids,
                    dataset=scale,
                    users=users,
                    concurrencies=concurrencies,
                    duration_s=duration_s,
                    p99_target_ms=p99_target_ms,
                )
            )
            result["processes"] = pids
            if groups:
                result["cpu_quota"] = {
                    "cpus": gateway_cpu,
                    "cgroups": {name: str(q.path) for name, q in groups.items()},
                    "throttled": {
                        name: throttle_delta(throttled_before[name], q.throttled())
                        for name, q in groups.items()
                    },
                }
            return result
        finally:
            for proc, grace in ((open_gw, 15), (bare, 15), (stack, 60)):
                if proc.proc is not None:
                    proc.stop(grace=grace)  # `cascade up` stops its children on SIGTERM
