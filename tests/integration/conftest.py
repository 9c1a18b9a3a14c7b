"""A real local stack for the gateway's integration tests, built once per session.

Everything runs as real processes on free ports under a temporary ``CASCADE_HOME``: a
``redis-server`` of our own (so a test can kill it without touching the shared one), the Feast
registry + Redis online store filled by ``cascade.features.store`` from a ``synthetic:tiny``
data set, ALS artifacts from ``fallback_mf``, a Two-Tower exported by ``two_tower.export`` and
served by a real ``tritonserver``, the MF service (``python -m fallback_mf``) and the gateway
(``python -m gateway``). ``GatewayStack.heal()`` puts every process back and waits until the
primary serves again, so each test starts from a healthy stack.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from cascade.runtime.paths import Layout
from cascade.runtime.procs import ManagedProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASET = "tiny"
# Breaker tuned for short tests: judged after 10 calls, open for 2 s.
GATEWAY_ENV = {
    "GATEWAY_DEADLINE_MS": "250",
    "GATEWAY_FEATURE_TIMEOUT_MS": "20",
    "GATEWAY_PRIMARY_TIMEOUT_MS": "100",
    "GATEWAY_MF_TIMEOUT_MS": "100",  # 20 + 100 + 100 fits the 250 ms deadline; CI here is loaded
    "GATEWAY_BREAKER_WINDOW": "20",
    "GATEWAY_BREAKER_MIN_CALLS": "10",
    "GATEWAY_BREAKER_WAIT_S": "2",
    "GATEWAY_BREAKER_HALF_OPEN_CALLS": "2",
    "GATEWAY_POPULAR_REFRESH_S": "0",
    "GATEWAY_JSON_LOGS": "false",
}


def _build_two_tower(layout: Layout, repository: Path) -> None:
    """Train a tiny Two-Tower (one epoch, dim 16) with the Two-Tower pipeline and export it."""
    from two_tower.artifacts import load_two_tower_artifact
    from two_tower.export import export_to_triton
    from two_tower.pipeline import run_train_two_tower
    from two_tower.train import TrainParams

    params = TrainParams(
        dim=16,
        hidden=32,
        side_dim=8,
        epochs=1,
        batch_size=512,
        threads=1,
        progress=False,
        device="cpu",
    )
    folder = run_train_two_tower(
        layout=layout, spec=DATASET, split=None, params=params, evaluate_test=False
    )
    export_to_triton(
        load_two_tower_artifact(folder),
        repository=repository,
        template=REPO_ROOT / "triton_models" / "two_tower" / "model.py",
    )


@dataclass
class GatewayStack:
    """The running processes and how to reach them."""

    tmp: Path
    env: dict[str, str]
    layout: Layout
    redis_port: int
    mf_port: int
    gateway_port: int
    triton_settings: object
    procs: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    # -- processes -------------------------------------------------------------------------

    def start_redis(self) -> None:
        proc = ManagedProcess(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            log_path=self.tmp / "redis.log",
            env=self.env,
        ).start()
        self.procs["redis"] = proc
        import redis

        client = redis.Redis(port=self.redis_port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def materialize(self) -> None:
        from cascade.features import store

        store.apply(layout=self.layout, dataset=DATASET)
        store.materialize(layout=self.layout, dataset=DATASET, full=True)

    def start_triton(self) -> None:
        from two_tower.triton_server import TritonProcess

        proc = TritonProcess(self.triton_settings, log_path=self.tmp / "triton.log")  # type: ignore[arg-type]
        self.procs["triton"] = proc.start()
        proc.wait_ready(timeout=120)
        self.triton_settings = proc.settings
        self.warm_triton()

    def warm_triton(self) -> None:
        """A few direct inferences: the first TorchScript calls are slow (profiling executor)."""
        import tritonclient.http as tc

        from gateway.tiers.triton import build_inputs
        from gateway.tiers.types import UserFeatures

        triton = self.procs["triton"]
        client = tc.InferenceServerClient(url=triton.http_url)  # type: ignore[attr-defined]
        try:
            for uid in range(5):
                client.infer(
                    "two_tower",
                    build_inputs(UserFeatures(user_id=uid), k=10, exclude=[], module=tc),
                )
        finally:
            client.close()

    def start_mf(self) -> None:
        from fallback_mf.artifacts import als_root

        env = dict(
            self.env,
            MF_PORT=str(self.mf_port),
            MF_ARTIFACTS_DIR=str(als_root(self.layout.artifacts_dir)),
            MF_RELOAD_INTERVAL_S="0",
            MF_JSON_LOGS="false",
        )
        proc = ManagedProcess(
            "mf", [sys.executable, "-m", "fallback_mf"], log_path=self.tmp / "mf.log", env=env
        )
        self.procs["mf"] = proc.start()
        proc.wait_ready(f"http://127.0.0.1:{self.mf_port}/readyz", timeout=60)

    def start_gateway(self) -> None:
        triton = self.procs["triton"]
        env = dict(
            self.env,
            **GATEWAY_ENV,
            GATEWAY_PORT=str(self.gateway_port),
            GATEWAY_TRITON_URL=triton.grpc_url,  # type: ignore[attr-defined]
            GATEWAY_MF_URL=f"http://127.0.0.1:{self.mf_port}",
            GATEWAY_DATASET=DATASET,
            GATEWAY_ARTIFACTS_DIR=str(self.layout.artifacts_dir),
        )
        proc = ManagedProcess(
            "gateway", [sys.executable, "-m", "gateway"], log_path=self.tmp / "gateway.log", env=env
        )
        self.procs["gateway"] = proc.start()
        proc.wait_ready(f"{self.url}/readyz", timeout=90)

    def heal(self) -> None:
        """Restart or resume whatever a test broke, then wait until two_tower serves again."""
        for name in ("redis", "triton", "mf"):
            self.procs[name].resume()
        if not self.procs["redis"].running():
            self.start_redis()
            self.materialize()
        if not self.procs["triton"].running():
            self.start_triton()
        if not self.procs["mf"].running():
            self.start_mf()
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while time.monotonic() < deadline:
                if (
                    http.get(f"/v1/recommendations/{self.known_user}?k=5").json()["served_by"]
                    == "two_tower"
                ):
                    return
                time.sleep(0.1)
        raise AssertionError(
            f"primary did not recover; gateway log:\n{self.procs['gateway'].log_tail()}"
        )

    @property
    def known_user(self) -> int:
        return int(self.users()[0])

    def users(self) -> np.ndarray:
        import pandas as pd

        path = self.layout.dataset_dir(DATASET) / "users.parquet"
        return np.sort(pd.read_parquet(path, columns=["user_id"])["user_id"].to_numpy(np.int64))

    def stop(self) -> None:
        for name in ("gateway", "mf", "triton", "redis"):
            if name in self.procs:
                self.procs[name].stop(grace=10)


@pytest.fixture(scope="session")
def gateway_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    tmp = tmp_path_factory.mktemp("gateway_stack")
    home = tmp / "home"
    redis_port = free_port()
    overrides = {
        "CASCADE_HOME": str(home),
        "CASCADE_FEAST_PROJECT": f"gwit_{uuid.uuid4().hex[:8]}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)  # the in-process builders (Feast, layout) read the environment
    layout = Layout.from_env()
    from two_tower.triton_server import TritonSettings

    stack = GatewayStack(
        tmp=tmp,
        env=dict(os.environ),
        layout=layout,
        redis_port=redis_port,
        mf_port=free_port(),
        gateway_port=free_port(),
        triton_settings=TritonSettings(
            model_repository=tmp / "triton_models",
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            otlp_endpoint=None,
        ),
    )
    try:
        from cascade.data.resolve import resolve_dataset
        from fallback_mf.cli import run_train_mf

        stack.start_redis()
        resolve_dataset("synthetic:tiny", layout=layout, name=DATASET)
        stack.materialize()
        run_train_mf(
            layout=layout,
            spec=DATASET,
            split=None,
            factors=8,
            iterations=2,
            threads=1,
            progress=False,
        )
        _build_two_tower(layout, tmp / "triton_models")
        stack.start_triton()
        stack.start_mf()
        stack.start_gateway()
        yield stack
    finally:
        stack.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
