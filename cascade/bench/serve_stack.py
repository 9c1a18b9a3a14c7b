"""The real local stack of ``make bench-serve``: started, measured by ``bench_serve``, stopped.

``cascade up`` (``python -m cascade.stack``) on free ports at the chosen scale (Triton, the MF
service and the gateway; data and models are built when missing), plus a second gateway with
``GATEWAY_BREAKER_FORCE_OPEN=true`` (row d: features + ALS). No API keys and no OTLP exporter:
neither is what is measured.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

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
) -> dict[str, Any]:
    """Start the stack and the breaker-open gateway, run ``bench_serve``, stop everything."""
    from cascade.bench.gateway import bench_serve

    host = "127.0.0.1"
    ports = {n: free_port() for n in ("gw", "mf", "th", "tg", "tm", "open")}
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
    gw, mf = f"http://{host}:{ports['gw']}", f"http://{host}:{ports['mf']}"
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
        _wait_ready(
            {"gateway-open": f"http://{host}:{ports['open']}/readyz"}, [open_gw], timeout_s=120
        )
        logger.info("bench-serve: stack ready; measuring (%s s per row)", duration_s)
        return asyncio.run(
            bench_serve(
                gateway_url=gw,
                triton_url=f"{host}:{ports['tg']}",
                mf_url=mf,
                open_gateway_url=f"http://{host}:{ports['open']}",
                dataset=scale,
                users=users,
                concurrencies=concurrencies,
                duration_s=duration_s,
                p99_target_ms=p99_target_ms,
            )
        )
    finally:
        if open_gw.proc is not None:
            open_gw.stop(grace=15)
        if stack.proc is not None:
            stack.stop(grace=60)  # `cascade up` stops its children on SIGTERM
