"""``cascade up``: build what is missing, then run Triton, the MF service, the gateway, the event
log (``nats-server -js``) and the events consumer locally.

Steps 1-3 live in ``cascade.stack_build``, the restart rule of step 4 in ``cascade.supervisor``.

1. Data: ``synthetic:<scale>`` (or ``data``) under ``$CASCADE_HOME/datasets`` with its feature tables.
2. Features: Feast ``apply`` + ``materialize`` into Redis when ``REDIS_URL`` (default
   ``redis://127.0.0.1:6379/0``) answers a PING, else into the SQLite online store. A full
   materialization when the registry is new (or ``rematerialize``), incremental otherwise.
3. Models: ALS on all interactions when ``artifacts/als/latest`` is missing; the Two-Tower when
   the Triton model repository holds no version (skipped, with a warning, when its training code
   is unavailable: the gateway then runs with ALS + popular only).
4. Processes, each in its own process group with its log in ``$CASCADE_HOME/run/<name>.log``:
   ``nats-server -js`` (its JetStream store in ``$CASCADE_HOME/nats``, so a restart keeps the
   log), ``python -m events`` (the consumer: events into the online store, when the online store
   is Redis), ``tritonserver``, ``python -m fallback_mf``, ``python -m gateway``. A child that
   dies is restarted after a backoff (1 s, doubling to 30 s; reset after 60 s up).
5. Ready: every child's readiness URL answers 200 (but the events consumer's: recommendations do
   not depend on it, and it is supervised all the same); the URLs, a fresh development API key
   (client ``dev``, also in ``run/dev-api-key``; the previous one is revoked) and an example
   ``curl`` are printed, and ``run/stack.json`` records the pids and URLs.
6. Ctrl-C / SIGTERM: the children get SIGTERM in reverse start order (the gateway first, the
   event log last; SIGKILL after 15 s); ``up`` returns 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import typer

from cascade.runtime.paths import Layout
from cascade.runtime.procs import ManagedProcess, ProcessError, http_ok
from cascade.runtime.redact import redact_root_handlers, redact_url
from cascade.stack_build import DEFAULT_REDIS_URL, build, choose_online_store, data_identity
from cascade.stack_status import SUPERVISOR
from cascade.supervisor import Child, Stack

logger = logging.getLogger(__name__)

# Triton and the MF service are internal: they listen on loopback whatever ``--host`` says, and
# only the gateway (authenticated) faces the network (docs/security.md).
INTERNAL_HOST = "127.0.0.1"


@dataclass(frozen=True)
class StackPorts:
    """Ports of the local stack (the gateway's defaults expect these)."""

    gateway: int = 8000
    mf: int = 8001
    triton_http: int = 8100
    triton_grpc: int = 8101
    triton_metrics: int = 8102
    # Not NATS's 4222/8222: a machine may run its own NATS there (the CI machines do).
    nats: int = 4223
    nats_monitor: int = 8223
    events: int = 8020  # the consumer's /healthz, /readyz, /metrics


def busy_ports(host: str, ports: StackPorts, *, with_triton: bool) -> list[str]:
    """The stack's ports that something already listens on (checked before building anything),
    each as ``8000 (CASCADE_GATEWAY_PORT)``: the variable (or ``--gateway-port``) that moves it."""
    names = ["gateway", "mf", "nats", "nats_monitor", "events"]
    if with_triton:
        names += ["triton_http", "triton_grpc", "triton_metrics"]
    busy = []
    for name in names:
        port = getattr(ports, name)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                busy.append(f"{port} (CASCADE_{name.upper()}_PORT)")
    return busy


def _children(
    *,
    layout: Layout,
    dataset: str,
    host: str,
    ports: StackPorts,
    repository: Path,
    with_triton: bool,
    keys_file: Path | None = None,
    data_checksum: str | None = None,
    with_consumer: bool = True,
    rollout_redis_url: str | None = None,
) -> list[Child]:
    env = dict(os.environ, CASCADE_HOME=str(layout.home), OPENBLAS_NUM_THREADS="1")
    logs = layout.run_dir
    children: list[Child] = _event_children(
        layout=layout, dataset=dataset, ports=ports, env=env, with_consumer=with_consumer
    )
    if with_triton:
        from two_tower.triton_server import TritonProcess, TritonSettings

        triton = TritonProcess(
            TritonSettings(
                model_repository=repository,
                http_port=ports.triton_http,
                grpc_port=ports.triton_grpc,
                metrics_port=ports.triton_metrics,
                host=INTERNAL_HOST,
            ),
            log_path=logs / "tritonserver.log",
        )
        children.append(Child(triton, f"http://{triton.http_url}/v2/models/two_tower/ready"))
    mf_env = dict(
        env,
        MF_HOST=INTERNAL_HOST,
        MF_PORT=str(ports.mf),
        MF_ARTIFACTS_DIR=str(layout.artifacts_dir / "als"),
        # The service refuses an ALS version trained on other data (issue 19).
        MF_DATASET=dataset,
        MF_DATA_CHECKSUM=data_checksum or "",
    )
    mf = ManagedProcess(
        "fallback_mf",
        [sys.executable, "-m", "fallback_mf"],
        log_path=logs / "fallback_mf.log",
        env=mf_env,
    )
    children.append(Child(mf, f"http://{INTERNAL_HOST}:{ports.mf}/readyz"))
    gw_env = dict(
        env,
        GATEWAY_HOST=host,
        GATEWAY_PORT=str(ports.gateway),
        GATEWAY_DATASET=dataset,
        GATEWAY_MF_URL=f"http://{INTERNAL_HOST}:{ports.mf}",
        GATEWAY_ARTIFACTS_DIR=str(layout.artifacts_dir),
        GATEWAY_TRITON_URL=f"{INTERNAL_HOST}:{ports.triton_grpc}" if with_triton else "",
        GATEWAY_EVENTS_NATS_URL=nats_url(ports),
    )
    if data_checksum:  # Triton refuses a Two-Tower version trained on other data (issue 19)
        gw_env["GATEWAY_DATASET_ID"] = f"{dataset}:{data_checksum[:12]}"
    if keys_file is not None:  # authentication on, with the development key (docs/security.md)
        gw_env["GATEWAY_API_KEYS_FILE"] = str(keys_file)
    if rollout_redis_url:  # `cascade rollout` works against this stack (docs/rollout.md)
        from cascade.runtime.feature_names import project_name
        from events.state import CTR_HASH, key_prefix

        gw_env["GATEWAY_ROLLOUT_REDIS_URL"] = rollout_redis_url
        # A canary's CTR from the events consumer's counters, in the same Redis.
        gw_env["GATEWAY_ROLLOUT_EVENTS_CTR_KEY"] = key_prefix(project_name(dataset)) + CTR_HASH
    gateway = ManagedProcess(
        "gateway", [sys.executable, "-m", "gateway"], log_path=logs / "gateway.log", env=gw_env
    )
    children.append(Child(gateway, f"http://{host}:{ports.gateway}/readyz"))
    return children


def nats_url(ports: StackPorts) -> str:
    return f"nats://{INTERNAL_HOST}:{ports.nats}"


def _event_children(
    *,
    layout: Layout,
    dataset: str,
    ports: StackPorts,
    env: dict[str, str],
    with_consumer: bool = True,
) -> list[Child]:
    """The event log (one ``nats-server -js``, its store under the home folder) and the
    consumer, which needs Redis (its state, dedup keys and CTR counters live there): with the
    SQLite online store the log still takes events (202) and keeps them until a consumer comes.
    The gateway connects to the log in the background, so the order only saves reconnects."""
    from events.natsd import NatsServer

    nats = NatsServer(
        layout.home / "nats",
        log_path=layout.run_dir / "nats-server.log",
        port=ports.nats,
        monitor_port=ports.nats_monitor,
    )
    nats.store_dir.mkdir(parents=True, exist_ok=True)
    nats_ready = f"http://{INTERNAL_HOST}:{ports.nats_monitor}/healthz?js-enabled-only=true"
    consumer_env = dict(
        env,
        EVENTS_NATS_URL=nats_url(ports),
        EVENTS_HOST=INTERNAL_HOST,
        EVENTS_PORT=str(ports.events),
        EVENTS_DATASET=dataset,
    )
    consumer = ManagedProcess(
        "events",
        [sys.executable, "-m", "events"],
        log_path=layout.run_dir / "events.log",
        env=consumer_env,
    )
    children = [Child(nats.process, nats_ready)]
    if with_consumer:
        ready = f"http://{INTERNAL_HOST}:{ports.events}/readyz"
        children.append(Child(consumer, ready, required=False))
    return children


def _banner(
    *,
    host: str,
    ports: StackPorts,
    layout: Layout,
    redis_url: str | None,
    with_triton: bool,
    api_key: str | None = None,
) -> str:
    gw = f"http://{host}:{ports.gateway}"
    traces = (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or "not exported (set OTEL_EXPORTER_OTLP_ENDPOINT)"
    )
    triton = (
        f"http://{INTERNAL_HOST}:{ports.triton_http} (gRPC {INTERNAL_HOST}:{ports.triton_grpc})"
        if with_triton
        else "not started"
    )
    return "\n".join(
        [
            "Cascade is up.",
            f"  gateway      {gw}  (OpenAPI: {gw}/docs)",
            f"  MF service   http://{INTERNAL_HOST}:{ports.mf}",
            f"  Triton       {triton}",
            f"  event log    {nats_url(ports)} (NATS JetStream; monitoring "
            f"http://{INTERNAL_HOST}:{ports.nats_monitor})",
            f"  consumer     http://{INTERNAL_HOST}:{ports.events} (events into the online store)"
            if redis_url
            else "  consumer     not started: it needs Redis (events wait in the log)",
            f"  online store {redact_url(redis_url) if redis_url else 'SQLite (' + str(layout.feast_dir) + ')'}",
            f"  logs         {layout.run_dir}/<name>.log",
            f"  metrics      {gw}/metrics, http://{INTERNAL_HOST}:{ports.mf}/metrics, "
            f"http://{INTERNAL_HOST}:{ports.events}/metrics"
            + (f", http://{INTERNAL_HOST}:{ports.triton_metrics}/metrics" if with_triton else ""),
            f"  traces       {traces}",
            f"  api key      {api_key} (client 'dev', also in {layout.run_dir}/dev-api-key)"
            if api_key
            else "  api key      none: authentication is off",
            f"  try:  curl -s -H 'Authorization: Bearer {api_key}' '{gw}/v1/recommendations/42?k=10'"
            if api_key
            else f"  try:  curl -s '{gw}/v1/recommendations/42?k=10'",
            "  online metrics: cascade report online",
            "Ctrl-C stops everything.",
        ]
    )


def up(
    *,
    scale: str = "demo",
    data: str | None = None,
    layout: Layout | None = None,
    host: str = "127.0.0.1",
    ports: StackPorts | None = None,
    redis_url: str | None = None,
    model_repository: Path | None = None,
    with_triton: bool = True,
    rematerialize: bool = False,
    ready_timeout_s: float = 180.0,
    stop_event: threading.Event | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Build what is missing, run the stack until ``stop_event`` / SIGINT / SIGTERM; see module doc."""
    from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY

    layout = layout or Layout.from_env()
    ports = ports or StackPorts()
    repository = Path(model_repository or DEFAULT_MODEL_REPOSITORY).resolve()
    busy = busy_ports(host, ports, with_triton=with_triton)
    if busy:
        raise ProcessError(
            f"ports already in use on {host}: {', '.join(busy)}; another `cascade up`? "
            "(`cascade status`), or move them with those variables or the --*-port options"
        )
    from events.natsd import nats_server_binary

    nats_server_binary()  # before minutes of building, not after: ProcessError says how to install
    store_url = choose_online_store(redis_url)
    dataset, two_tower_ready = build(
        layout=layout,
        spec=data or f"synthetic:{scale}",
        model_repository=repository,
        with_two_tower=with_triton,
        rematerialize=rematerialize,
    )
    with_triton = with_triton and two_tower_ready
    from cascade.keys_cli import ensure_dev_key

    keys_file, api_key = ensure_dev_key(layout=layout)
    stop = stop_event or threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack(
        _children(
            layout=layout,
            dataset=dataset,
            host=host,
            ports=ports,
            repository=repository,
            with_triton=with_triton,
            keys_file=keys_file,
            data_checksum=data_identity(layout.dataset_dir(dataset))["checksum"],
            with_consumer=store_url is not None,
            rollout_redis_url=store_url,
        )
    )
    supervisor = {
        "pid": os.getpid(),
        "create_time": _create_time(os.getpid()),
        "dataset": dataset,
        "gateway_url": f"http://{host}:{ports.gateway}",
        # for the CLI's other commands (report online, rollout) run from another terminal
        "redis_url": store_url,
    }
    try:
        for child in stack.children:
            child.start()
        _write_state(layout, stack, supervisor)
        deadline = time.monotonic() + ready_timeout_s
        for child in [c for c in stack.children if c.required]:
            while not http_ok(child.ready_url) and not stop.is_set():
                if time.monotonic() > deadline:
                    raise ProcessError(
                        f"{child.proc.name} not ready at {child.ready_url}:\n{child.proc.log_tail()}"
                    )
                stack.supervise_once(time.monotonic())
                time.sleep(0.25)
        if not stop.is_set():
            echo(
                _banner(
                    host=host,
                    ports=ports,
                    layout=layout,
                    redis_url=store_url,
                    with_triton=with_triton,
                    api_key=api_key,
                )
            )
        while not stop.wait(0.5):
            stack.supervise_once(time.monotonic())
            _write_state(layout, stack, supervisor)
    finally:
        echo("stopping Cascade ...")
        stack.stop()
        # `cascade status` then tells a clean stop from a crash
        supervisor["stopped_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        _write_state(layout, stack, supervisor)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    echo("stopped.")
    return 0


def _write_state(layout: Layout, stack: Stack, supervisor: Mapping[str, object]) -> None:
    """``run/stack.json``: what ``cascade status`` / ``cascade down`` read (cascade.stack_status).

    Start times go with the pids so a reader never mistakes a reused pid for a child."""
    state: dict[str, object] = {
        c.proc.name: {
            "pid": c.proc.pid,
            "create_time": _create_time(c.proc.pid),
            "ready_url": c.ready_url,
            "restarts": c.restarts,
            "log": str(c.proc.log_path),
        }
        for c in stack.children
        if c.proc.proc
    }
    state[SUPERVISOR] = dict(supervisor)
    path = layout.run_dir / "stack.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def _create_time(pid: int | None) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time() if pid else None
    except psutil.Error:
        return None


def up_command(
    scale: str = typer.Option(
        "demo", help="Synthetic data scale to build when missing: tiny, demo, large."
    ),
    data: str = typer.Option(
        "", help="Data spec instead of the synthetic scale (movielens:PATH, csv:PATH)."
    ),
    host: str = typer.Option(
        "127.0.0.1", help="Address the gateway binds to (Triton and the MF service: loopback only)."
    ),
    gateway_port: int = typer.Option(8000, envvar="CASCADE_GATEWAY_PORT"),
    mf_port: int = typer.Option(8001, envvar="CASCADE_MF_PORT"),
    triton_http_port: int = typer.Option(8100, envvar="CASCADE_TRITON_HTTP_PORT"),
    triton_grpc_port: int = typer.Option(8101, envvar="CASCADE_TRITON_GRPC_PORT"),
    triton_metrics_port: int = typer.Option(8102, envvar="CASCADE_TRITON_METRICS_PORT"),
    nats_port: int = typer.Option(4223, envvar="CASCADE_NATS_PORT"),
    nats_monitor_port: int = typer.Option(8223, envvar="CASCADE_NATS_MONITOR_PORT"),
    events_port: int = typer.Option(8020, envvar="CASCADE_EVENTS_PORT"),
    redis_url: str = typer.Option(
        "", help=f"Redis for the online store (default $REDIS_URL or {DEFAULT_REDIS_URL})."
    ),
    model_repository: str = typer.Option(
        "", help="Triton model repository (default: triton_models/)."
    ),
    triton: bool = typer.Option(
        True, "--triton/--no-triton", help="Start Triton (the primary tier)."
    ),
    rematerialize: bool = typer.Option(
        False, help="Materialize all features again (an emptied Redis)."
    ),
) -> None:
    """Run the whole stack locally (builds missing data and models first); Ctrl-C stops it."""
    from cascade.data.errors import DataSourceError
    from cascade.runtime.feature_store import FeatureStoreError

    ports = StackPorts(
        gateway_port, mf_port, triton_http_port, triton_grpc_port, triton_metrics_port,
        nats_port, nats_monitor_port, events_port,
    )  # fmt: skip
    try:
        code = up(
            scale=scale,
            data=data or None,
            host=host,
            ports=ports,
            redis_url=redis_url or None,
            model_repository=Path(model_repository) if model_repository else None,
            with_triton=triton,
            rematerialize=rematerialize,
            echo=typer.echo,
        )
    except DataSourceError as exc:  # bad input (an unknown scale or source): usage error
        typer.echo(f"cascade up failed: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    except (FeatureStoreError, ProcessError) as exc:
        typer.echo(f"cascade up failed: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    except KeyboardInterrupt:  # Ctrl-C while building, before any child started
        typer.echo("interrupted", err=True)
        raise typer.Exit(code=130) from None
    raise typer.Exit(code=code)


if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("CASCADE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    redact_root_handlers()
    typer.run(up_command)
