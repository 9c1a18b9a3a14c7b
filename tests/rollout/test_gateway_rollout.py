"""The rollout inside the gateway app: sticky canary routing, counters flushed to Redis, the
shadow mirror, the controller rolling a garbage candidate back, and the last known state kept
when Redis goes away. Real Redis; the primary is an in-process fake serving two "versions"
(a fake: an answer that breaks a rule on demand cannot be had from the real Triton model; the
drill D11 runs the real tritonserver)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.edge import keys
from gateway.main import create_app
from gateway.metrics import LATENCY_BUCKETS
from gateway.rollout.assign import in_candidate
from gateway.rollout.controller import RolloutController
from gateway.rollout.router import RolloutRouter
from gateway.rollout.settings import RolloutSettings
from gateway.rollout.state import Phase, Plan, RolloutState
from gateway.rollout.store import RolloutStore, connect
from gateway.tiers.types import TierResult, UserFeatures
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import KNOWN_USERS, FakePrimary, Fakes
from tests.gateway.test_api import make_settings
from tests.rollout.conftest import REDIS_URL


class TwoVersions(FakePrimary):
    """Answers as version ``version`` (default 1); ``garbage`` versions repeat one item."""

    def __init__(self) -> None:
        super().__init__()
        self.garbage: set[int] = set()
        self.versions: Counter[int | None] = Counter()

    async def recommend(
        self,
        features: UserFeatures,
        *,
        k: int,
        exclude: Sequence[int],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        version: int | None = None,
    ) -> TierResult:
        self.versions[version] += 1
        answer = await super().recommend(features, k=k, exclude=exclude, timeout_s=timeout_s)
        items = list(answer.item_ids)
        if version in self.garbage:
            items[1] = items[0]  # a duplicate: the validation refuses it
        return TierResult(items, answer.scores, model_version=f"two_tower/{version or 1}")


def write_state(prefix: str, state: RolloutState) -> None:
    async def main() -> None:
        store = RolloutStore(connect(REDIS_URL), prefix=prefix)
        await store.client.set(store.state_key, __import__("json").dumps(state.to_json()))
        await store.close()

    asyncio.run(main())


def canary(percent_steps: tuple[float, ...] = (50.0,), rid: str = "r-test") -> RolloutState:
    plan = Plan(rollout_id=rid, stable=1, candidate=2, shadow_s=0, steps=percent_steps, step_s=600)
    return RolloutState(phase=Phase.CANARY, stable_version=1, plan=plan, step=0, since=0, rev=1)


@pytest.fixture
def fakes() -> Fakes:
    f = Fakes()
    f.primary = TwoVersions()
    return f


@pytest.fixture
def client(fakes: Fakes, prefix: str) -> Iterator[AppClient]:
    app = create_app(make_settings(), components=fakes.factory)
    app.state.rollout = RolloutSettings(
        redis_url=REDIS_URL, prefix=prefix, refresh_s=0.05, controller=False
    )
    yield AppClient(app)


def router_of(fakes: Fakes) -> RolloutRouter:
    assert fakes.components is not None and fakes.components.chain.rollout is not None
    return fakes.components.chain.rollout


def store_call(c: AppClient, fakes: Fakes, body: Any) -> Any:
    return c.loop.run_until_complete(body(router_of(fakes).cache.store))


def serve_all(c: AppClient, rounds: int = 1) -> dict[int, str]:
    versions = {}
    for _ in range(rounds):
        for user in KNOWN_USERS:
            r = c.get(f"/v1/recommendations/{user}?k=5")
            assert r.status_code == 200, r.text
            versions[user] = r.json()["model_version"]
    return versions


def test_canary_routes_sticky_users_and_counts(
    client: AppClient, fakes: Fakes, prefix: str
) -> None:
    write_state(prefix, canary())
    with client as c:
        versions = serve_all(c, rounds=2)
        expect = {
            u: "two_tower/2" if in_candidate("r-test", u, 50) else "two_tower/1"
            for u in KNOWN_USERS
        }
        assert versions == expect
        n_cand = sum(v == "two_tower/2" for v in expect.values())
        assert 10 < n_cand < 40
        c.loop.run_until_complete(router_of(fakes).flush())
        cand = store_call(c, fakes, lambda s: s.read_counts("r-test", 0, "candidate"))
        stable = store_call(c, fakes, lambda s: s.read_counts("r-test", 0, "stable"))
        metrics = c.get("/metrics").text
    assert cand["requests"] == cand["calls"] == 2 * n_cand and "errors" not in cand
    assert stable["requests"] == 2 * (len(KNOWN_USERS) - n_cand)
    assert sum(v for f, v in cand.items() if f.startswith("lat_")) == 2 * n_cand
    assert "gateway_rollout_phase 2.0" in metrics
    assert 'gateway_rollout_calls_total{arm="candidate",outcome="ok",version="2"}' in metrics


def test_garbage_candidate_rolled_back_then_stable_serves_everyone(
    client: AppClient, fakes: Fakes, prefix: str
) -> None:
    assert isinstance(fakes.primary, TwoVersions)
    fakes.primary.garbage.add(2)
    write_state(prefix, canary((20.0,)))  # 50% of garbage would open the shared breaker
    with client as c:
        versions = serve_all(c, rounds=4)  # candidate users fall back to ALS: still 200
        assert "two_tower/2" not in versions.values()
        router = router_of(fakes)
        c.loop.run_until_complete(router.flush())
        controller = RolloutController(
            router.cache.store, bounds=LATENCY_BUCKETS, model="two_tower"
        )
        verdict = c.loop.run_until_complete(controller.look())
        assert verdict is not None and verdict.decision.value == "fail"
        assert "errors worse" in verdict.reason and "fallbacks worse" in verdict.reason
        state = c.loop.run_until_complete(router.cache.refresh())
        assert state.phase is Phase.ROLLED_BACK
        before = fakes.primary.versions[2]
        assert set(serve_all(c).values()) == {"two_tower/1"}
        assert fakes.primary.versions[2] == before  # nobody routed to the candidate any more
        assert 'gateway_rollout_transitions_total{to="rolled_back"} 1.0' in c.get("/metrics").text


def test_shadow_mirrors_off_the_request_path(client: AppClient, fakes: Fakes, prefix: str) -> None:
    assert isinstance(fakes.primary, TwoVersions)
    plan = Plan(rollout_id="r-sh", stable=1, candidate=2, shadow_s=60, shadow_share=1.0)
    write_state(prefix, RolloutState(phase=Phase.SHADOW, stable_version=1, plan=plan, rev=1))
    with client as c:
        versions = serve_all(c)
        router = router_of(fakes)
        c.loop.run_until_complete(router.drain())
        c.loop.run_until_complete(router.flush())
        cand = store_call(c, fakes, lambda s: s.read_counts("r-sh", -1, "candidate"))
        metrics = c.get("/metrics").text
    assert set(versions.values()) == {"two_tower/1"}  # shadow never serves
    served = len(KNOWN_USERS)
    mirrored = fakes.primary.versions[2]
    dropped = served - mirrored  # four slots: a burst can find them full
    assert mirrored > 0 and cand["calls"] == mirrored
    assert f'gateway_shadow_dropped_total{{cause="busy"}} {float(dropped)}' in metrics
    assert 'gateway_shadow_overlap_count{version="2"}' in metrics


def test_last_known_state_kept_when_redis_goes_away(fakes: Fakes, prefix: str) -> None:
    write_state(prefix, canary())
    app = create_app(make_settings(), components=fakes.factory)
    # a long refresh period: the background loop must not hold a connection while the test
    # swaps the client
    app.state.rollout = RolloutSettings(
        redis_url=REDIS_URL, prefix=prefix, refresh_s=60, controller=False
    )
    with AppClient(app) as c:
        first = serve_all(c)
        router = router_of(fakes)
        c.loop.run_until_complete(router.cache.store.client.aclose())
        router.cache.store.client = connect("redis://127.0.0.1:1/0", timeout_s=0.05)
        c.loop.run_until_complete(router.tick())
        assert router.cache.stale and router.cache.state.phase is Phase.CANARY
        assert serve_all(c) == first
        assert "gateway_rollout_state_stale 1.0" in c.get("/metrics").text


def test_pin_version_only_with_the_key_flag(fakes: Fakes, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    _, debug = keys.add_key(path, client="debug", pin_version=True)
    _, app_key = keys.add_key(path, client="app")
    assert keys.read_keys(path)[debug.split("_")[1]].pin_version
    app = create_app(make_settings(api_keys_file=path), components=fakes.factory)
    with AppClient(app) as c:
        pinned = c.get("/v1/recommendations/3?k=5&model_version=2", headers=bearer(debug))
        assert pinned.status_code == 200 and pinned.json()["model_version"] == "two_tower/2"
        body = {"user_id": 3, "k": 5, "model_version": 2}
        assert c.post("/v1/recommendations", json=body, headers=bearer(debug)).status_code == 200
        refused = c.get("/v1/recommendations/3?model_version=2", headers=bearer(app_key))
        assert refused.status_code == 403
        assert refused.json()["code"] == "version_pin_forbidden"
        assert c.post("/v1/recommendations", json=body, headers=bearer(app_key)).status_code == 403
        plain = c.get("/v1/recommendations/3?k=5", headers=bearer(app_key))
        assert plain.status_code == 200 and plain.json()["model_version"] == "two_tower/1"
        bad = c.get("/v1/recommendations/3?model_version=0", headers=bearer(debug))
        assert bad.status_code == 422


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
