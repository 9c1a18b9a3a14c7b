"""The feedback loop with real processes (issue 17 items 4-5): the gateway (in this process, its
real Feast reader on a real Redis), a real ``nats-server -js`` and the real consumer
(``python -m events``). A click accepted by ``POST /v1/events`` reaches the online store, the
NEXT recommendation excludes the clicked item, and the primary is handed it as the newest item
of the user's history; impressions joined to the answer's request_id count for that tier and
model version in ``cascade report online``'s table.

The primary is a stand-in that records the features it is given and ranks the catalogue (a
Triton process is not needed to show what the primary receives; the Triton tier's use of
``recent_items`` / ``seen_items`` is tested in tests/two_tower and tests/integration).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from events.natsd import NatsServer
from events.report import online_table
from gateway.components import Components, build_breaker, chain_config
from gateway.main import create_app
from gateway.resilience.chain import FallbackChain
from gateway.tiers.features import FeastFeatureReader
from gateway.tiers.popular import PopularList
from gateway.tiers.types import TierResult, UserFeatures
from tests.events.stack import DATASET, Stack, build_store, delete_keys, new_project
from tests.gateway.appclient import AppClient
from tests.gateway.test_api import make_settings

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL_VERSION = "two_tower/1"


class RecordingPrimary:
    """Ranks the catalogue in a fixed order, minus what it is told to exclude; keeps the
    features of every call."""

    def __init__(self, items: Sequence[int]) -> None:
        self.items = [int(i) for i in items]
        self.seen: list[UserFeatures] = []

    async def ready(self, *, timeout_s: float = 0.5) -> bool:
        return True

    async def close(self) -> None:
        return None

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
        self.seen.append(features)
        skip = set(exclude)
        ranked = [i for i in self.items if i not in skip][:k]
        return TierResult(ranked, [1.0 - n / 1000 for n in range(len(ranked))], MODEL_VERSION)


@pytest.fixture(scope="module")
def loop_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, NatsServer]]:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("home")
    root = tmp_path_factory.mktemp("nats")
    nats = NatsServer(root / "js", log_path=root / "nats.log").start()
    project = new_project()
    mp.setenv("CASCADE_HOME", str(home))
    mp.setenv("CASCADE_DATASET", DATASET)
    interactions, items = build_store(home, REDIS_URL, project, mp)
    stack = Stack(home, REDIS_URL, nats.url, project, interactions, items)
    stack.start_consumer()  # it creates the streams the gateway publishes to
    try:
        yield stack, nats
    finally:
        stack.stop()
        nats.stop()
        delete_keys(REDIS_URL, [f"*{project}", f"cascade:events:{project}:*"])
        mp.undo()


def test_a_click_is_excluded_from_the_next_answer_and_reaches_the_primary_and_the_ctr(
    loop_stack: tuple[Stack, NatsServer], tmp_path: Path
) -> None:
    stack, nats = loop_stack
    catalogue = sorted(int(i) for i in stack.items)
    primary = RecordingPrimary(catalogue)

    async def components(settings, metrics) -> Components:  # type: ignore[no-untyped-def]
        reader = FeastFeatureReader.open(layout=stack.layout, dataset=DATASET, socket_timeout_s=2)
        await reader.start()
        popular = PopularList.from_arrays(items=catalogue, counts=[1] * len(catalogue))
        chain = FallbackChain(
            config=chain_config(settings),
            popular=popular,
            breaker=build_breaker(settings, metrics),
            metrics=metrics,
            features=reader,
            primary=primary,  # type: ignore[arg-type]
            fallback=None,
        )
        return Components(chain=chain, primary=primary, closers=[reader.close])  # type: ignore[arg-type]

    settings = make_settings(
        events_nats_url=nats.url,
        events_partitions=4,  # as the consumer (tests/events/stack.py)
        feature_timeout_ms=200,
        deadline_ms=1000,
        primary_timeout_ms=500,
        mf_url="",
    )
    user = int(stack.interactions["user_id"].value_counts().index[0])
    with AppClient(create_app(settings, components=components)) as client:
        deadline = time.monotonic() + 20
        while client.app.state.events.state != "connected":
            assert time.monotonic() < deadline, "the gateway did not connect to the log"
            client.loop.run_until_complete(asyncio.sleep(0.05))
        first = client.get(f"/v1/recommendations/{user}?k=5", headers={"X-Request-ID": "loop-1"})
        assert first.status_code == 200 and first.json()["served_by"] == "two_tower", first.text
        shown = [i["item_id"] for i in first.json()["items"]]
        clicked = shown[0]
        assert clicked not in primary.seen[-1].seen_items
        # let the served record reach the consumer before the impressions that join to it
        client.loop.run_until_complete(asyncio.sleep(1.0))
        now = time.time()
        events = [
            {"event_id": f"imp-{n}", "user_id": user, "item_id": item, "type": "impression",
             "timestamp": now, "request_id": "loop-1"}
            for n, item in enumerate(shown)
        ] + [{"event_id": "click-1", "user_id": user, "item_id": clicked, "type": "click",
              "timestamp": now + 0.001, "request_id": "loop-1"}]  # fmt: skip
        accepted = client.post("/v1/events", json={"events": events})
        assert accepted.status_code == 202 and accepted.json()["accepted"] == len(events)

        deadline = time.monotonic() + 30
        while True:  # the next answers, until the consumer has applied the click
            answer = client.get(f"/v1/recommendations/{user}?k=5")
            assert answer.status_code == 200, answer.text
            history = primary.seen[-1]
            if clicked in history.seen_items or time.monotonic() > deadline:
                break
            client.loop.run_until_complete(asyncio.sleep(0.2))
        assert clicked in history.seen_items, "the click never reached the online store"
        assert history.recent_items[0] == clicked  # the newest item of the history
        items = [i["item_id"] for i in answer.json()["items"]]
        assert clicked not in items and len(items) == 5
        assert items[:4] == shown[1:]  # the rest of the ranking moved up by one

    deadline = time.monotonic() + 20
    while True:
        rows = {
            (r["tier"], r["model_version"]): r
            for r in online_table(REDIS_URL, project=stack.project)
        }
        row = rows.get(("two_tower", MODEL_VERSION))
        if (row and row["impressions"] >= 5 and row["clicks"] >= 1) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert row is not None and (row["impressions"], row["clicks"]) == (5, 1), rows
    assert row["ctr"] == pytest.approx(0.2)
