"""A real tritonserver started by the container's entrypoint refuses its admin APIs without the key.

``docker/triton-entrypoint.sh`` runs as in the image: the real ``tritonserver`` binary (from the
nvidia-pytriton wheel, as everywhere in tests/integration), the real manifest loader, a model
repository of a tiny Python-backend ``two_tower`` (the contract's config, a model.py that needs
no torch). Only what this machine needs is appended: the backend folder and loopback addresses.

Checked over HTTP and gRPC: the repository index and shared-memory registration answer 403 /
PERMISSION_DENIED without the admin header and work with it; a new version with a matching
manifest is loaded by the loader, one that does not match is not.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path

import httpx
import pytest

from cascade.runtime.procs import ManagedProcess, free_port
from tests.deploy.test_triton_entrypoint import ENTRYPOINT, tools_dir
from two_tower import manifest
from two_tower.triton_config import render_config
from two_tower.triton_server import (
    ADMIN_HEADER,
    prepare_backends,
    server_env,
    tritonserver_binary,
)

pytestmark = pytest.mark.integration

MODEL_PY = """class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        return []
"""
KEY = uuid.uuid4().hex
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"


@dataclass
class Server:
    url: str
    grpc_url: str
    model_dir: Path


def add_version(model_dir: Path, version: int, *, with_manifest: bool = True) -> Path:
    folder = model_dir / str(version)
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(MODEL_PY)
    if with_manifest:
        manifest.write_manifest(folder)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("triton_admin")
    model_dir = tmp / "models" / "two_tower"
    model_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(render_config())
    add_version(model_dir, 1)
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "tritonserver").symlink_to(tritonserver_binary())
    backends = prepare_backends(tmp / "backends")
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = server_env()
    env.update(
        PATH=os.pathsep.join([str(bin_dir), env["PATH"]]),
        TRITON_ADMIN_KEY=KEY,
        TRITON_MODEL_REPOSITORY=str(tmp / "models"),
        TRITON_HTTP_PORT=str(http),
        TRITON_GRPC_PORT=str(grpc),
        TRITON_METRICS_PORT=str(metrics),
        TRITON_POLL_SECS="0.5",
        CASCADE_TOOLS_DIR=str(tools_dir(tmp / "tools")),
    )
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    proc = ManagedProcess(
        "triton-entrypoint",
        [
            "sh",
            str(ENTRYPOINT),
            f"--backend-directory={backends}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
        ],
        log_path=tmp / "triton.log",
        env=env,
    )
    proc.start()
    try:
        proc.wait_ready(f"http://127.0.0.1:{http}/v2/models/two_tower/ready", timeout=120)
        yield Server(f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}", model_dir)
    finally:
        proc.stop(grace=15)


def test_repository_index_needs_the_admin_header(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        refused = http.post("/v2/repository/index", json={})
        assert refused.status_code == 403, refused.text
        wrong = http.post("/v2/repository/index", json={}, headers={ADMIN_HEADER: "nope"})
        assert wrong.status_code == 403
        ok = http.post("/v2/repository/index", json={}, headers={ADMIN_HEADER: KEY})
        assert ok.status_code == 200, ok.text
        assert {m["name"] for m in ok.json()} == {"two_tower"}
        # loading, config and logging are behind the same header
        assert http.post("/v2/repository/models/two_tower/load", json={}).status_code == 403
        assert http.get("/v2/models/two_tower/config").status_code == 403
        assert http.get("/v2/logging").status_code == 403
        assert http.get("/v2/trace/setting").status_code == 403
        # inference and health stay open (the gateway's path)
        assert http.get("/v2/models/two_tower/ready").status_code == 200


def test_shared_memory_registration_needs_the_admin_header(server: Server) -> None:
    region = shared_memory.SharedMemory(create=True, size=64)
    body = {"key": f"/{region.name.lstrip('/')}", "offset": 0, "byte_size": 64}
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            path = "/v2/systemsharedmemory/region/cascade_test/register"
            refused = http.post(path, json=body)
            assert refused.status_code == 403, refused.text
            assert http.get("/v2/systemsharedmemory/status").status_code == 403
            ok = http.post(path, json=body, headers={ADMIN_HEADER: KEY})
            assert ok.status_code == 200, ok.text
            status = http.get("/v2/systemsharedmemory/status", headers={ADMIN_HEADER: KEY})
            assert [r["name"] for r in status.json()] == ["cascade_test"]
            gone = http.post(
                "/v2/systemsharedmemory/region/cascade_test/unregister",
                headers={ADMIN_HEADER: KEY},
            )
            assert gone.status_code == 200
    finally:
        region.close()
        region.unlink()


def test_grpc_admin_calls_need_the_admin_header(server: Server) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_repository_index()
        assert (
            "restricted" in str(refused.value).lower() or "permission" in str(refused.value).lower()
        )
        with pytest.raises(InferenceServerException):
            client.get_system_shared_memory_status()
        # Triton's gRPC front end prefixes the configured header name with its own
        with pytest.raises(InferenceServerException):
            client.get_model_repository_index(headers={ADMIN_HEADER: KEY})
        index = client.get_model_repository_index(headers={GRPC_ADMIN_HEADER: KEY})
        assert [m.name for m in index.models] == ["two_tower"]
        assert client.is_model_ready("two_tower")
    finally:
        client.close()


def _ready(server: Server, version: int) -> bool:
    response = httpx.get(f"{server.url}/v2/models/two_tower/versions/{version}/ready", timeout=5)
    return response.status_code == 200


def _wait(predicate: object, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.25)
    return False


def test_loader_loads_a_verified_version_and_skips_a_tampered_one(server: Server) -> None:
    assert _ready(server, 1)
    add_version(server.model_dir, 2)
    assert _wait(lambda: _ready(server, 2)), "a version with a matching manifest was not loaded"
    folder = add_version(server.model_dir, 3)
    (folder / "model.py").write_text(MODEL_PY + "\nimport os  # changed after the manifest\n")
    time.sleep(3)  # several loader rounds (0.5 s each): none may load version 3
    assert not _ready(server, 3), "a version that does not match its manifest was loaded"
    assert _ready(server, 2), "the verified versions keep serving"
