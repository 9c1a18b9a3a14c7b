"""Security of the real serving stack (conftest.py's processes) plus two gateway replicas of our own
with authentication, a key file, a metrics token and rate limits in a ``redis-server`` of their own
(so a test can stop it without touching the features' Redis).

Real HTTP through uvicorn's parser, real Triton, real Redis: the authentication matrix, revocation
reaching every replica without restart, one token bucket shared by two replicas, the limiter
falling back to per-process buckets when its Redis is frozen or dead (requests keep succeeding),
no upstream path reachable through the gateway, Triton's admin APIs refused, every internal
service listening on loopback only.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from cascade.runtime.procs import ManagedProcess, free_port
from gateway.edge import keys
from gateway.edge.security import loopback_host
from tests.integration.conftest import DATASET, GATEWAY_ENV, GatewayStack

pytestmark = pytest.mark.integration

METRICS_TOKEN = "metrics-" + "t" * 32
URL = "/v1/recommendations"


@dataclass
class Secured:
    """Two authenticated replicas, their key file and the limiter's Redis."""

    urls: list[str]
    keys_file: Path
    redis: ManagedProcess
    replicas: list[ManagedProcess]
    key: str
    key_id: str


def _start_redis(tmp: Path, env: dict[str, str]) -> ManagedProcess:
    port = free_port()
    proc = ManagedProcess(
        "limiter-redis",
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        log_path=tmp / "limiter-redis.log",
        env=env,
    ).start()
    proc.port = port  # type: ignore[attr-defined]
    _wait_listening(proc)
    return proc


def _wait_listening(proc: ManagedProcess) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", proc.port), timeout=0.2):  # type: ignore[attr-defined]
                return
        except OSError:
            assert time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.05)


@pytest.fixture(scope="module")
def secured(
    gateway_stack: GatewayStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    stack = gateway_stack
    tmp = tmp_path_factory.mktemp("security")
    keys_file = tmp / "api_keys.json"
    record, key = keys.add_key(keys_file, client="itest")
    redis = _start_redis(tmp, stack.env)
    replicas: list[ManagedProcess] = []
    urls = []
    try:
        for n in range(2):
            port = free_port()
            env = dict(
                stack.env,
                **GATEWAY_ENV,
                GATEWAY_PORT=str(port),
                GATEWAY_TRITON_URL=stack.procs["triton"].grpc_url,  # type: ignore[attr-defined]
                GATEWAY_MF_URL=f"http://127.0.0.1:{stack.mf_port}",
                GATEWAY_DATASET=DATASET,
                GATEWAY_ARTIFACTS_DIR=str(stack.layout.artifacts_dir),
                GATEWAY_API_KEYS_FILE=str(keys_file),
                GATEWAY_API_KEYS_RELOAD_S="0.2",
                GATEWAY_METRICS_TOKEN=METRICS_TOKEN,
                GATEWAY_RATE_LIMIT_REDIS_URL=f"redis://127.0.0.1:{redis.port}/0",  # type: ignore[attr-defined]
            )
            proc = ManagedProcess(
                f"gateway-secure-{n}",
                [sys.executable, "-m", "gateway"],
                log_path=tmp / f"gateway-{n}.log",
                env=env,
            ).start()
            replicas.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
        for proc, url in zip(replicas, urls, strict=True):
            proc.wait_ready(f"{url}/readyz", timeout=90)
        yield Secured(
            urls=urls,
            keys_file=keys_file,
            redis=redis,
            replicas=replicas,
            key=key,
            key_id=record.key_id,
        )
    finally:
        for proc in replicas:
            proc.stop(grace=10)
        redis.stop(grace=5)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_valid_key_serves_the_primary(secured: Secured, gateway_stack: GatewayStack) -> None:
    gateway_stack.heal()
    for url in secured.urls:
        deadline = time.monotonic() + 30  # a fresh replica's first Triton calls may be slow: ALS
        while True:
            r = httpx.get(
                f"{url}{URL}/{gateway_stack.known_user}?k=5", headers=bearer(secured.key), timeout=5
            )
            assert r.status_code == 200, r.text
            if r.json()["served_by"] == "two_tower":
                break
            assert time.monotonic() < deadline, r.json()
            time.sleep(0.1)
        r = httpx.get(
            f"{url}{URL}/{gateway_stack.known_user}?k=5",
            headers={"X-API-Key": secured.key},
            timeout=5,
        )
        assert r.status_code == 200


def test_authentication_matrix(secured: Secured, gateway_stack: GatewayStack) -> None:
    revoked_record, revoked = keys.add_key(secured.keys_file, client="gone")
    keys.revoke(secured.keys_file, key_id=revoked_record.key_id)
    _, unknown = keys.generate_key()
    wrong = secured.key[:-3] + ("xyz" if not secured.key.endswith("xyz") else "abc")
    time.sleep(0.5)  # the replicas re-read the key file (0.2 s)
    cases = {
        "no key": {},
        "unknown key": bearer(unknown),
        "wrong secret": bearer(wrong),
        "revoked key": bearer(revoked),
        "basic auth": {"Authorization": "Basic aXRlc3Q6cGFzcw=="},
        "empty bearer": {"Authorization": "Bearer"},
        "garbage": {"X-API-Key": "' OR 1=1 --"},
        "two keys": {"Authorization": f"Bearer {secured.key}", "X-API-Key": unknown},
        "jwt when JWT is off": bearer("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
    }
    answers = set()
    with httpx.Client(base_url=secured.urls[0], timeout=5) as http:
        for name, headers in cases.items():
            r = http.get(f"{URL}/{gateway_stack.known_user}", headers=headers)
            assert r.status_code == 401, (name, r.text)
            body = r.json()
            body.pop("request_id")
            answers.add((tuple(sorted(body.items())), r.headers["WWW-Authenticate"]))
            for secret in (secured.key, revoked, unknown, revoked_record.key_id, secured.key_id):
                assert secret not in r.text, name
    assert len(answers) == 1, answers


def test_revocation_reaches_every_replica_without_restart(
    secured: Secured, gateway_stack: GatewayStack
) -> None:
    record, key = keys.add_key(secured.keys_file, client="rotating")
    user = gateway_stack.known_user

    def statuses() -> list[int]:
        return [
            httpx.get(f"{u}{URL}/{user}?k=3", headers=bearer(key), timeout=5).status_code
            for u in secured.urls
        ]

    deadline = time.monotonic() + 10
    while statuses() != [200, 200]:
        assert time.monotonic() < deadline, "a new key was not picked up"
        time.sleep(0.1)
    pids = [p.pid for p in secured.replicas]
    keys.revoke(secured.keys_file, key_id=record.key_id)
    deadline = time.monotonic() + 10
    while statuses() != [401, 401]:
        assert time.monotonic() < deadline, "revocation did not reach every replica"
        time.sleep(0.1)
    assert [p.pid for p in secured.replicas] == pids and all(p.running() for p in secured.replicas)


def test_one_bucket_shared_by_both_replicas(secured: Secured, gateway_stack: GatewayStack) -> None:
    record, key = keys.add_key(secured.keys_file, client="metered", rate=0.02, burst=4)
    time.sleep(0.5)
    user = gateway_stack.known_user
    got = []
    for i in range(6):  # alternate the replicas: a per-replica bucket would allow 8
        got.append(
            httpx.get(f"{secured.urls[i % 2]}{URL}/{user}?k=3", headers=bearer(key), timeout=5)
        )
    assert [r.status_code for r in got] == [200, 200, 200, 200, 429, 429], [r.text for r in got]
    assert int(got[4].headers["Retry-After"]) >= 1 and got[4].json()["code"] == "rate_limited"
    metrics = httpx.get(f"{secured.urls[0]}/metrics", headers=bearer(METRICS_TOKEN), timeout=5).text
    assert (
        f'gateway_rate_limited_total{{backend="redis",client="metered",key_id="{record.key_id}"}}'
        in metrics
    )


def test_limiter_redis_frozen_or_dead_never_fails_requests(
    secured: Secured, gateway_stack: GatewayStack
) -> None:
    user = gateway_stack.known_user
    url = secured.urls[1]
    try:
        secured.redis.pause()  # SIGSTOP: connections hang; the 20 ms socket timeout bounds it
        for _ in range(10):
            started = time.perf_counter()
            r = httpx.get(f"{url}{URL}/{user}?k=3", headers=bearer(secured.key), timeout=5)
            assert r.status_code == 200, r.text
            assert time.perf_counter() - started < 2.0
        secured.redis.resume()
        secured.redis.kill()  # dead: refused connections
        for _ in range(10):
            assert (
                httpx.get(
                    f"{url}{URL}/{user}?k=3", headers=bearer(secured.key), timeout=5
                ).status_code
                == 200
            )
        metrics = httpx.get(f"{url}/metrics", headers=bearer(METRICS_TOKEN), timeout=5).text
        assert 'gateway_ratelimit_decisions_total{backend="local"}' in metrics
        assert "gateway_ratelimit_redis_errors_total" in metrics
    finally:
        secured.redis.resume()
        if not secured.redis.running():
            secured.redis.start()
            _wait_listening(secured.redis)


def test_gateway_forwards_nothing_but_its_api(
    secured: Secured, gateway_stack: GatewayStack
) -> None:
    triton_paths = [
        "/v2",
        "/v2/health/ready",
        "/v2/models/two_tower",
        "/v2/models/two_tower/ready",
        "/v2/models/two_tower/infer",
        "/v2/repository/index",
        "/v2/repository/models/two_tower/unload",
        "/v2/logging",
        "/v2/trace/setting",
        "/v2/systemsharedmemory/status",
    ]
    mf_paths = ["/v1/models", "/v1/reload", "/admin", "/debug", "/.env"]
    with httpx.Client(base_url=secured.urls[0], timeout=5) as http:
        for path in triton_paths + mf_paths:
            for method in ("GET", "POST"):
                assert http.request(method, path).status_code == 401, path
                r = http.request(method, path, headers=bearer(secured.key))
                assert r.status_code in (404, 405), (method, path, r.status_code, r.text)
                assert "triton" not in r.text.lower()


def test_metrics_need_the_metrics_token(secured: Secured) -> None:
    with httpx.Client(base_url=secured.urls[0], timeout=5) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers=bearer(secured.key)).status_code == 401
        r = http.get("/metrics", headers=bearer(METRICS_TOKEN))
        assert (
            r.status_code == 200
            and "gateway_client_requests_total" in r.text
            and "csk_" not in r.text
        )
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200


def test_input_limits_over_real_http(secured: Secured, gateway_stack: GatewayStack) -> None:
    user = gateway_stack.known_user
    with httpx.Client(base_url=secured.urls[0], timeout=5, headers=bearer(secured.key)) as http:
        assert http.get(f"{URL}/{user}", headers={"X-Big": "x" * 65_536}).status_code == 431
        assert (
            http.post(
                URL,
                content=b"[" + b"1," * 20_000 + b"1]",
                headers={"Content-Type": "application/json"},
            ).status_code
            == 413
        )
        r = http.get(f"{URL}/{user}?k=100000")
        assert r.status_code == 422 and "k" in r.json()["detail"]
        assert http.get(f"{URL}/not-a-user").status_code == 422


def test_triton_admin_apis_are_restricted(gateway_stack: GatewayStack) -> None:
    triton = gateway_stack.procs["triton"]
    base = f"http://{triton.http_url}"  # type: ignore[attr-defined]
    admin = {"triton-admin-key": triton.settings.admin_key}  # type: ignore[attr-defined]
    with httpx.Client(base_url=base, timeout=5) as http:
        assert http.post("/v2/repository/index").status_code == 403
        assert http.post("/v2/repository/models/two_tower/unload").status_code == 403
        assert http.post("/v2/repository/models/two_tower/load").status_code == 403
        assert http.get("/v2/models/two_tower/config").status_code == 403
        assert http.post("/v2/logging", json={"log_verbose_level": 1}).status_code == 403
        assert (
            http.post("/v2/repository/index", headers=admin).status_code == 200
        )  # the admin key opens it
        assert http.get("/v2/models/two_tower/ready").status_code == 200  # inference APIs stay open


def test_internal_services_listen_on_loopback_only(
    gateway_stack: GatewayStack, secured: Secured
) -> None:
    procs = {
        **gateway_stack.procs,
        **{p.name: p for p in secured.replicas},
        "limiter-redis": secured.redis,
    }
    for name, proc in procs.items():
        listening = [
            c.laddr
            for c in psutil.Process(proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening, name
        assert all(loopback_host(addr.ip) for addr in listening), (name, listening)
