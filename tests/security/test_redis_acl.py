"""Redis' per-role ACL users, loaded into a real redis-server (issue 20, item 6).

``deploy/redis/render-acl.sh`` renders the ACL file from password files, the way the compose
Redis container does at start; ``redis-server`` starts with ``deploy/redis/redis.conf`` and that
file (only the port, address and data folder changed for this machine). Then each role is tried
with the commands it must and must not run: the gateway through its real rate limiter.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from cascade.runtime.procs import ManagedProcess, free_port
from gateway.edge.ratelimit import RateLimiter

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "deploy" / "redis" / "render-acl.sh"
CONF = REPO / "deploy" / "redis" / "redis.conf"
PASSWORDS = {
    "gateway": "gw-secret-1",
    "materializer": "mat-secret-2",
    "events": "ev-secret-4",
    "admin": "adm-secret-3",
}
FEATURE_KEY = b"\x02\x00\x00\x00user_id\x04\x00\x00\x00\x08\x00\x00\x00\x2a\x00demo"


def render_acl(tmp: Path, passwords: dict[str, str]) -> Path:
    secrets = tmp / "secrets"
    secrets.mkdir(exist_ok=True)
    for user, password in passwords.items():
        (secrets / user).write_text(password + "\n")
    out = subprocess.run(["sh", str(RENDER), str(secrets)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    acl = tmp / "users.acl"
    acl.write_text(out.stdout)
    return acl


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("redis_acl")
    acl = render_acl(tmp, PASSWORDS)
    port = free_port()
    args = ["redis-server", str(CONF), "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--dir", str(tmp), "--appendonly", "no", "--save", "", "--aclfile", str(acl)]
    proc = ManagedProcess("redis-acl", args, log_path=tmp / "redis.log").start()
    try:
        probe = redis.Redis(
            host="127.0.0.1", port=port, username="probe", password="x", socket_timeout=1
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        admin = client(port, "admin")
        admin.hset(FEATURE_KEY, mapping={b"_ts:users": b"1", b"f": b"v"})
        yield port
    finally:
        proc.stop()


def client(port: int, user: str, db: int = 0) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        username=user,
        password=PASSWORDS[user],
        db=db,
        socket_timeout=2,
    )


def test_rendered_file_holds_no_password(tmp_path: Path) -> None:
    text = render_acl(tmp_path, PASSWORDS).read_text()
    assert not any(p in text for p in PASSWORDS.values())
    assert "user default off" in text


def test_render_refuses_a_missing_password(tmp_path: Path) -> None:
    (tmp_path / "gateway").write_text("x")
    out = subprocess.run(["sh", str(RENDER), str(tmp_path)], capture_output=True, text=True)
    assert out.returncode != 0 and "materializer" in out.stderr


def test_no_anonymous_access(redis_port: int) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("x")
    probe = redis.Redis(
        host="127.0.0.1", port=redis_port, username="probe", password="x", socket_timeout=2
    )
    assert probe.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        probe.hgetall(FEATURE_KEY)


def test_gateway_reads_features_but_cannot_write_or_flush(redis_port: int) -> None:
    gateway = client(redis_port, "gateway")
    assert gateway.hmget(FEATURE_KEY, [b"f"]) == [b"v"]
    forbidden = [
        lambda: gateway.hset(FEATURE_KEY, b"f", b"poisoned"),
        lambda: gateway.set(FEATURE_KEY, b"x"),
        lambda: gateway.delete(FEATURE_KEY),
        lambda: gateway.expire(FEATURE_KEY, 1),
        lambda: gateway.flushall(),
        lambda: gateway.flushdb(),
        lambda: gateway.keys("*"),
        lambda: gateway.config_get("*"),
        lambda: gateway.config_set("appendonly", "no"),
        lambda: gateway.eval("return redis.call('DEL', KEYS[1])", 1, FEATURE_KEY),
        lambda: gateway.execute_command("SHUTDOWN"),
    ]
    for call in forbidden:
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
    assert client(redis_port, "admin").hget(FEATURE_KEY, b"f") == b"v"


def test_gateway_rate_limits_and_breaker_state_work(redis_port: int) -> None:
    url = f"redis://gateway:{PASSWORDS['gateway']}@127.0.0.1:{redis_port}/2"
    errors: list[BaseException] = []

    async def take() -> list[str]:
        limiter = RateLimiter.from_url(url, timeout_s=1.0, on_redis_error=errors.append)
        try:
            return [(await limiter.check("k1", rate=1.0, burst=2)).backend for _ in range(3)]
        finally:
            await limiter.close()

    backends = asyncio.run(take())
    assert not errors, errors
    assert backends == ["redis"] * 3
    gateway = client(redis_port, "gateway", db=2)
    assert gateway.exists("cascade:ratelimit:k1") == 1
    breaker = client(redis_port, "gateway", db=1)
    breaker.set("cascade:gateway:primary:pybreaker:state", "open")
    assert breaker.get("cascade:gateway:primary:pybreaker:state") == b"open"
    # a script on a feature key is refused inside the script too
    sha = gateway.script_load("return redis.call('HSET', KEYS[1], 'f', 'x')")
    with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)no permissions|NOPERM"):
        client(redis_port, "gateway").evalsha(sha, 1, FEATURE_KEY)


def test_materializer_writes_features_but_cannot_flush(redis_port: int) -> None:
    jobs = client(redis_port, "materializer")
    key = FEATURE_KEY + b"-2"
    with jobs.pipeline(transaction=False) as pipe:  # what Feast's online_write_batch sends
        pipe.hset(key, mapping={b"_ts:users": b"2", b"f": b"w"})
        pipe.expire(key, 3600)
        pipe.execute()
    assert list(jobs.scan_iter(match=b"*-2")) == [key]  # Feast's teardown path
    assert jobs.hkeys(key) and jobs.hdel(key, b"f") == 1 and jobs.delete(key) == 1
    for call in (
        jobs.flushall,
        jobs.flushdb,
        lambda: jobs.keys("*"),
        lambda: jobs.config_get("*"),
        lambda: jobs.eval("return 1", 0),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()


def test_events_consumer_runs_its_script_and_writes_features_but_cannot_flush(
    redis_port: int,
) -> None:
    """The consumer's user: Feast's write, its per-batch Lua script (EVALSHA), no FLUSH*/KEYS."""
    consumer = client(redis_port, "events")
    key = FEATURE_KEY + b"-3"
    with consumer.pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping={b"_ts:users": b"3", b"f": b"x"})
        pipe.expire(key, 3600)
        pipe.execute()
    sha = consumer.script_load("return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', 60)")
    assert consumer.evalsha(sha, 1, "cascade:events:p:d:e-1", "1") == b"OK"
    assert consumer.evalsha(sha, 1, "cascade:events:p:d:e-1", "1") is None  # a repeat: no-op
    for call in (consumer.flushall, consumer.flushdb, lambda: consumer.keys("*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()


def test_wrong_password_is_refused(redis_port: int) -> None:
    wrong = redis.Redis(
        host="127.0.0.1", port=redis_port, username="gateway", password="nope", socket_timeout=2
    )
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()


# ---- the deployments use these files and these users ---------------------------------------


def test_compose_redis_runs_the_acl_and_config_files_with_no_password_in_sight() -> None:
    from tests.deploy.test_compose import COMPOSE_FILE, env_of

    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    server = services["redis"]
    command = " ".join(server["command"])
    assert "--aclfile /tmp/users.acl" in command and "/usr/local/etc/redis/redis.conf" in command
    assert "requirepass" not in command and "PASSWORD" not in command
    assert not server.get("environment"), "no password in Redis' environment"
    mounts = {v.split(":")[0]: v.split(":")[1] for v in server["volumes"]}
    assert mounts["./deploy/redis/redis.conf"] == "/usr/local/etc/redis/redis.conf"
    assert mounts["./deploy/redis/render-acl.sh"] == "/usr/local/etc/redis/render-acl.sh"
    targets = {s["target"] for s in server["secrets"]}
    assert targets == {f"/run/secrets/redis-users/{u}" for u in PASSWORDS}
    users = {}
    for name, service in services.items():
        for key, value in env_of(service).items():
            if key.endswith("REDIS_URL"):
                users.setdefault(name, set()).add(value.split("://")[1].split(":")[0])
    assert users.pop("gateway") == {"gateway"}
    assert set(users.pop("features")) == {"materializer"}
    assert users.pop("events-consumer") == {"events"}  # features and its Lua script
    assert all(u == {"materializer"} for u in users.values()), users
    assert "fallback-mf" not in users, "the MF service uses no Redis"


def test_k8s_redis_mounts_its_config_and_acl_and_clients_use_their_users() -> None:
    from tests.deploy.test_k8s import K8S, one, pod_template, render

    docs = render(K8S / "overlays" / "cpu-dev")
    pod = pod_template(one(docs, "StatefulSet", "redis"))["spec"]
    container = pod["containers"][0]
    assert container["args"] == [
        "redis-server",
        "/etc/redis/redis.conf",
        "--aclfile",
        "/etc/redis/acl/users.acl",
    ]
    assert not container.get("env"), "no password in Redis' environment"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["acl"]["secret"]["secretName"] == "cascade-redis-acl"
    config = one(docs, "ConfigMap", "redis-config")["data"]["redis.conf"]
    assert config == CONF.read_text(), "k8s/redis's redis.conf differs from deploy/redis"
    keys = {}
    for workload in ("gateway", "cascade-materialize", "cascade-retrain", "fallback-mf"):
        kind = "Deployment" if workload in ("gateway", "fallback-mf") else "CronJob"
        for c in pod_template(one(docs, kind, workload))["spec"]["containers"]:
            for item in c.get("env", []):
                if item["name"] == "REDIS_URL":
                    keys[workload] = item["valueFrom"]["secretKeyRef"]["key"]
    assert keys == {
        "gateway": "GATEWAY_REDIS_URL",
        "cascade-materialize": "JOBS_REDIS_URL",
        "cascade-retrain": "JOBS_REDIS_URL",
    }


def test_gpu_prod_redis_is_documented_with_tls() -> None:
    text = (REPO / "docs" / "deployment.md").read_text()
    assert "rediss://gateway:" in text and "rediss://materializer:" in text
    external = (REPO / "k8s" / "overlays" / "gpu-prod" / "redis-external.yaml").read_text()
    assert "rediss://" in external


def test_gateway_runs_a_rollout_under_its_own_keys(redis_port: int) -> None:
    # compose and k8s set GATEWAY_ROLLOUT_PREFIX=cascade:gateway:rollout and the gateway user's
    # URL: every store operation (Lua CAS with history, counters, CTR baseline, lock) must pass.
    from gateway.rollout import state as rollout
    from gateway.rollout.store import RolloutStore, connect

    url = f"redis://gateway:{PASSWORDS['gateway']}@127.0.0.1:{redis_port}/0"

    async def run() -> tuple[int | None, dict[str, int], dict[str, int], bool, int]:
        store = RolloutStore(connect(url, timeout_s=1.0), prefix="cascade:gateway:rollout")
        try:
            await store.apply(lambda s: rollout.set_stable(s, 3, now=1.0))
            await store.add_counts("r1", 0, {"stable": {"requests": 5}})
            counts = await store.read_counts("r1", 0, "stable")
            base = await store.ctr_baseline("r1", 0, {"impressions": 10})
            locked = await store.hold_lock("replica-a", ttl_s=5)
            history = await store.history()
            return (await store.load()).stable_version, counts, base, locked, len(history)
        finally:
            await store.close()

    stable, counts, base, locked, history = asyncio.run(run())
    assert stable == 3 and counts == {"requests": 5} and base == {"impressions": 10}
    assert locked and history == 1
    with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)no permissions|NOPERM"):
        client(redis_port, "gateway").set("cascade:rollout:state", "x")  # outside its keys
