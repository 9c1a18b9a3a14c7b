"""The stack ``make drill`` runs against: real processes, with fault proxies in front of Triton,
Redis and the OTLP collector.

::

    load generator -> gateway -> [proxy] -> tritonserver (gRPC)
                              -> [proxy] -> redis-server (our own, append-only file: a killed
                              |             and restarted Redis comes back with its features)
                              -> MF service
                              -> [proxy] -> OTLP sink (a tiny collector that answers 200)
                              -> nats-server -js (the event log, its store under home)
                                   -> events consumer (python -m events) -> redis-server

With ``gateway_quota`` (``--gateway-cpu``), every gateway process the stack starts (a restart by
``heal`` included) is moved into that CPU quota before it serves: a machine 2-3x slower.

Everything lives under ``home`` (default ``$CASCADE_HOME/drills``) on free ports; the shared
Redis at 6379 is never touched. Data and models are built once by ``cascade.stack_build.build``
(``synthetic:<scale>``) and reused by later runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from cascade.drills.fault_modes import Pass
from cascade.drills.proxyhub import ProxySpec, RemoteProxy, start_hub
from cascade.drills.target import DrillTarget, GatewayFacts
from cascade.runtime.paths import Layout
from cascade.runtime.procs import ManagedProcess, ProcessError, free_port, http_ok
from events.contract import EVENTS_DIR
from events.state import key_prefix

if TYPE_CHECKING:
    from cascade.drills.slow_node import GatewayQuota

logger = logging.getLogger(__name__)

# The documented gateway defaults (gateway/settings.py), with quiet logs: a log line per request
# would cost the 2 shared cores more than the drills measure.
GATEWAY_ENV = {
    "GATEWAY_DEADLINE_MS": "250",
    "GATEWAY_FEATURE_TIMEOUT_MS": "20",
    "GATEWAY_PRIMARY_TIMEOUT_MS": "100",
    "GATEWAY_BREAKER_WAIT_S": "5",
    "GATEWAY_BREAKER_HALF_OPEN_CALLS": "2",
    "GATEWAY_POPULAR_REFRESH_S": "0",
    "GATEWAY_JSON_LOGS": "false",
    "GATEWAY_LOG_LEVEL": "WARNING",
    # the drills' load generator plays the ingress: its X-Request-Start is believed at the edge
    "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32",
}


@dataclass
class DrillStack:
    """Processes, proxies and how to heal them."""

    home: Path
    scale: str
    gateway_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, ManagedProcess] = field(default_factory=dict)
    proxies: dict[str, RemoteProxy] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    dataset: str = ""
    users: list[int] = field(default_factory=list)
    triton_settings: object = None
    gateway_quota: GatewayQuota | None = None  # hold every gateway process to a CPU quota

    @property
    def layout(self) -> Layout:
        return Layout(home=self.home)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> DrillStack:
        """Proxies first (the gateway dials them), then build and start the processes."""
        await asyncio.to_thread(self._start_all)
        return self

    def _start_all(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        names = ("redis", "triton_http", "triton_grpc", "triton_metrics", "mf", "gateway",
                 "nats", "nats_monitor", "events")  # fmt: skip
        for name in (*names, "control", "sink", "p_triton", "p_redis", "p_otlp"):
            self.ports[name] = free_port()
        specs = [
            ProxySpec(
                "triton", self.ports["p_triton"], "127.0.0.1", self.ports["triton_grpc"], True
            ),
            ProxySpec("redis", self.ports["p_redis"], "127.0.0.1", self.ports["redis"]),
            ProxySpec("otlp", self.ports["p_otlp"], "127.0.0.1", self.ports["sink"]),
        ]
        hub, self.proxies = start_hub(
            specs, control_port=self.ports["control"], sink_port=self.ports["sink"],
            log_path=self.home / "run" / "proxyhub.log",
        )  # fmt: skip
        self.procs["proxyhub"] = hub
        self.env = dict(
            os.environ,
            CASCADE_HOME=str(self.home),
            CASCADE_FEAST_PROJECT=f"drills_{uuid.uuid4().hex[:8]}",
            REDIS_URL=f"redis://127.0.0.1:{self.ports['redis']}/0",
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
        )
        self.env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        self._start_processes()

    def _start_processes(self) -> None:
        from cascade.stack_build import build

        self.start_redis()
        saved = {
            k: os.environ.get(k) for k in ("CASCADE_HOME", "CASCADE_FEAST_PROJECT", "REDIS_URL")
        }
        os.environ.update({k: self.env[k] for k in saved})  # the in-process builders read them
        try:
            self.dataset, two_tower = build(
                layout=self.layout,
                spec=f"synthetic:{self.scale}",
                model_repository=self.home / "triton_models",
                rematerialize=True,
            )
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if not two_tower:
            raise ProcessError("no Two-Tower model could be built: the drills need Triton")
        self.users = _users_by_activity(self.layout, self.dataset)
        self.start_nats()
        self.start_events()
        self.start_triton()
        self.start_mf()
        self.start_gateway()

    async def stop(self) -> None:
        for name in ("gateway", "mf", "triton", "events", "nats", "redis", "proxyhub"):
            if name in self.procs:
                await asyncio.to_thread(self.procs[name].stop, grace=10)
        if self.dataset:
            # The drills' events are synthetic load: the consumer's offline log of them must not
            # become interactions when the drill data set is next built explicitly (events are
            # training data, docs/events.md).
            log = self.layout.dataset_dir(self.dataset) / EVENTS_DIR
            await asyncio.to_thread(shutil.rmtree, log, True)

    # -- processes ----------------------------------------------------------------------------

    def start_redis(self) -> None:
        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        if shutil.which("redis-server") is None:
            raise ProcessError("redis-server is not installed: the drills run their own Redis")
        argv = ["redis-server", "--port", str(self.ports["redis"]), "--bind", "127.0.0.1",
                "--dir", str(data), "--appendonly", "yes", "--save", ""]  # fmt: skip
        proc = ManagedProcess("redis", argv, log_path=self.home / "run" / "redis.log", env=self.env)
        self.procs["redis"] = proc.start()
        import redis

        client = redis.Redis(port=self.ports["redis"], socket_timeout=1)
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    pass
                except redis.RedisError:
                    if not proc.running() or time.monotonic() > deadline:
                        raise ProcessError(f"redis did not start:\n{proc.log_tail()}") from None
                time.sleep(0.05)
        finally:
            client.close()

    def start_triton(self) -> None:
        from two_tower.triton_server import TritonProcess, TritonSettings

        settings = TritonSettings(
            model_repository=self.home / "triton_models",
            http_port=self.ports["triton_http"],
            grpc_port=self.ports["triton_grpc"],
            metrics_port=self.ports["triton_metrics"],
            otlp_endpoint=None,
        )
        proc = TritonProcess(settings, log_path=self.home / "run" / "tritonserver.log")
        self.procs["triton"] = proc.start()
        proc.wait_ready(timeout=180)

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.ports['nats']}"

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['events']}"

    def start_nats(self) -> None:
        from events.natsd import NatsServer

        server = NatsServer(self.home / "nats", log_path=self.home / "run" / "nats-server.log",
                            port=self.ports["nats"], monitor_port=self.ports["nats_monitor"])  # fmt: skip
        self.procs["nats"] = server.start().process

    def start_events(self) -> None:
        """The consumer, on the drills' own Redis (directly: no proxy; D6 is about the gateway)."""
        env = dict(self.env, EVENTS_NATS_URL=self.nats_url, EVENTS_HOST="127.0.0.1",
                   EVENTS_PORT=str(self.ports["events"]), EVENTS_DATASET=self.dataset,
                   EVENTS_LOG_LEVEL="WARNING", EVENTS_JSON_LOGS="false")  # fmt: skip
        proc = ManagedProcess("events", [sys.executable, "-m", "events"],
                              log_path=self.home / "run" / "events.log", env=env)  # fmt: skip
        self.procs["events"] = proc.start()
        proc.wait_ready(f"{self.events_url}/readyz", timeout=90)

    def start_mf(self) -> None:
        from fallback_mf.artifacts import als_root

        env = dict(self.env, MF_PORT=str(self.ports["mf"]), MF_HOST="127.0.0.1",
                   MF_ARTIFACTS_DIR=str(als_root(self.layout.artifacts_dir)),
                   MF_RELOAD_INTERVAL_S="0", MF_JSON_LOGS="false", MF_LOG_LEVEL="WARNING")  # fmt: skip
        proc = ManagedProcess("mf", [sys.executable, "-m", "fallback_mf"],
                              log_path=self.home / "run" / "fallback_mf.log", env=env)  # fmt: skip
        self.procs["mf"] = proc.start()
        proc.wait_ready(f"http://127.0.0.1:{self.ports['mf']}/readyz", timeout=90)

    def start_gateway(self) -> None:
        self.gateway_env = dict(
            GATEWAY_ENV,
            GATEWAY_PORT=str(self.ports["gateway"]),
            GATEWAY_TRITON_URL=self.proxies["triton"].address,
            GATEWAY_MF_URL=f"http://127.0.0.1:{self.ports['mf']}",
            GATEWAY_DATASET=self.dataset,
            GATEWAY_ARTIFACTS_DIR=str(self.layout.artifacts_dir),
            GATEWAY_EVENTS_NATS_URL=self.nats_url,
        )
        env = dict(
            self.env,
            **self.gateway_env,
            REDIS_URL=f"redis://{self.proxies['redis'].address}/0",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{self.proxies['otlp'].address}",
            OTEL_SERVICE_NAME="gateway",
        )
        proc = ManagedProcess("gateway", [sys.executable, "-m", "gateway"],
                              log_path=self.home / "run" / "gateway.log", env=env)  # fmt: skip
        self.procs["gateway"] = proc.start()
        if self.gateway_quota is not None:
            self.gateway_quota.add(proc.pid)
        proc.wait_ready(f"{self.url}/readyz", timeout=120)

    def restore(self, name: str) -> None:
        """Bring a killed component back (Redis reloads its append-only file)."""
        starters = {"redis": self.start_redis, "triton": self.start_triton, "mf": self.start_mf,
                    "nats": self.start_nats, "events": self.start_events}  # fmt: skip
        starters[name]()

    def heal(self) -> None:
        """Proxies to pass, everything resumed and running, then wait for the primary to serve."""
        for proxy in self.proxies.values():
            proxy.set_mode(Pass())
        for name in ("redis", "nats", "triton", "mf", "events"):
            self.procs[name].resume()
        for name in ("redis", "nats", "triton", "mf", "events"):
            if not self.procs[name].running():
                self.restore(name)
        if not http_ok(f"{self.url}/healthz", timeout=3.0):  # dead or hung: start it again
            logger.warning("gateway does not answer /healthz: restarting it")
            self.procs["gateway"].stop(grace=5)
            self.start_gateway()
        user = self.users[0]
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=self.url, timeout=5) as http:
            streak = 0
            while time.monotonic() < deadline:
                served = http.get(f"/v1/recommendations/{user}?k=10").headers.get("X-Served-By")
                streak = streak + 1 if served == "two_tower" else 0
                if streak >= 5:
                    return
                time.sleep(0.1)
        raise ProcessError(f"the primary did not recover:\n{self.procs['gateway'].log_tail()}")

    def target(self) -> DrillTarget:
        return DrillTarget(
            url=self.url,
            gateway_pid=self.procs["gateway"].pid,
            users=self.users,
            procs=self.procs,
            restore=self.restore,
            heal=self.heal,
            facts=GatewayFacts.from_env(self.gateway_env),
            proxies=self.proxies,
            events_url=self.events_url,
            redis_url=self.env["REDIS_URL"],
            events_prefix=key_prefix(self.env["CASCADE_FEAST_PROJECT"]),
        )


def _users_by_activity(layout: Layout, dataset: str) -> list[int]:
    """Known user ids, most interactions first (the Zipf ranks)."""
    import pandas as pd

    from cascade.runtime import schema

    frame = pd.read_parquet(
        layout.dataset_dir(dataset) / schema.INTERACTIONS_FILE, columns=["user_id"]
    )
    return [int(u) for u in frame["user_id"].value_counts().index]
