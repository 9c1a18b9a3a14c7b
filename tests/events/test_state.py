"""The bounded per-user state (one Lua script per batch, real Redis) equals
``cascade.data.features.user_state`` of the log, whatever the arrival order, batch split and
redeliveries; duplicates change nothing; CTR counters count each event once."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cascade.data.features import user_state
from cascade.runtime.schema import ITEM_ID, MAX_SEEN_ITEMS, RECENT_ITEMS_LEN, TIMESTAMP, USER_ID
from events.contract import Event, ServedRecord
from events.report import online_table
from events.state import StateStore, key_prefix, ts_us

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
T0 = 1_780_000_000.0


def run(make: Callable[[StateStore], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=5)
        try:
            await client.ping()  # type: ignore[misc]
        except Exception as exc:
            pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
        prefix = key_prefix(f"test_{uuid.uuid4().hex[:10]}")
        store = StateStore(client, prefix=prefix, dedup_ttl_s=600, state_ttl_s=600)
        try:
            await make(store)
        finally:
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(main())


def random_log(rng: random.Random, n: int, *, users: int, items: int, instants: int) -> list[Event]:
    kinds = ["click", "view", "purchase", "rating", "impression"]
    out = []
    for i in range(n):
        kind = rng.choice(kinds)
        out.append(
            Event(
                event_id=f"e{i}",
                user_id=rng.randrange(users),
                item_id=rng.randrange(items),
                type=kind,  # type: ignore[arg-type]
                # few instants: many equal timestamps; sub-second parts test the µs rounding
                timestamp=T0 + rng.randrange(instants) * 0.25 + 0.000001 * rng.randrange(3),
                value=float(rng.randint(1, 5)) if kind == "rating" else None,
            )
        )
    return out


def expected(events: list[Event]) -> dict[int, tuple[int, list[int], list[int]]]:
    consumed = [e for e in events if e.consumed]
    frame = pd.DataFrame(
        {
            USER_ID: np.array([e.user_id for e in consumed], dtype=np.int64),
            ITEM_ID: np.array([e.item_id for e in consumed], dtype=np.int64),
            TIMESTAMP: pd.to_datetime([ts_us(e.timestamp) for e in consumed], unit="us", utc=True),
        }
    )
    state = user_state(frame)
    return {
        int(r.user_id): (int(r.interaction_count), list(r.recent_items), list(r.seen_items))
        for r in state.itertuples()
    }


async def apply_in_batches(
    store: StateStore, events: list[Event], rng: random.Random
) -> dict[int, tuple[int, list[int], list[int]]]:
    """Apply in random batches, re-sending random earlier events (redeliveries)."""
    got: dict[int, tuple[int, list[int], list[int]]] = {}
    sent: list[Event] = []
    i = 0
    while i < len(events):
        size = rng.randint(1, 60)
        batch = events[i : i + size]
        i += size
        batch = batch + rng.sample(sent, min(len(sent), rng.randint(0, 5)))
        rng.shuffle(batch)
        sent.extend(batch)
        result = await store.apply(batch, seeds={}, now_us=ts_us(T0))
        for u in result.users:
            got[u.user_id] = (u.interaction_count, u.recent_items, u.seen_items)
    return got


@pytest.mark.parametrize("seed", range(6))
def test_state_equals_user_state_in_any_order(seed: int) -> None:
    rng = random.Random(seed)
    # small item ranges and few instants: repeats, ties; a heavy user overflows both lists
    events = random_log(rng, 1500, users=6, items=40 + seed * 150, instants=400)
    events += [
        Event(event_id=f"h{k}", user_id=99, item_id=k, type="view", timestamp=T0 + rng.random())
        for k in range(MAX_SEEN_ITEMS + 80)
    ]
    rng.shuffle(events)

    async def check(store: StateStore) -> None:
        got = await apply_in_batches(store, events, rng)
        want = expected(events)
        assert got.keys() == want.keys()
        for user, state in want.items():
            assert got[user] == state, user
        assert len(got[99][2]) == MAX_SEEN_ITEMS and len(got[99][1]) == RECENT_ITEMS_LEN

    run(check)


def test_duplicates_change_nothing_and_are_counted() -> None:
    rng = random.Random(1)
    events = random_log(rng, 200, users=3, items=30, instants=50)

    async def check(store: StateStore) -> None:
        first = await store.apply(events, seeds={}, now_us=1)
        again = await store.apply(events, seeds={}, now_us=1)
        assert first.applied == 200 and first.duplicates == 0
        assert again.applied == 0 and again.duplicates == 200
        # the rewrite after an all-duplicate batch carries the same state, a newer stamp
        by_user = {u.user_id: u for u in first.users}
        for u in again.users:
            assert (u.interaction_count, u.recent_items, u.seen_items) == (
                by_user[u.user_id].interaction_count,
                by_user[u.user_id].recent_items,
                by_user[u.user_id].seen_items,
            )
            assert u.write_us > by_user[u.user_id].write_us

    run(check)


def test_a_known_user_continues_from_the_seed() -> None:
    rng = random.Random(2)
    old = random_log(rng, 300, users=1, items=60, instants=100)
    later = [
        Event(
            event_id=f"n{i}",
            user_id=0,
            item_id=rng.randrange(80),
            type="click",
            timestamp=T0 + 1000 + rng.random(),
        )
        for i in range(30)
    ]

    async def check(store: StateStore) -> None:
        base = expected(old)[0]
        assert await store.users_without_state([0, 5]) == [0, 5]
        result = await store.apply(later, seeds={0: base}, now_us=1)
        assert [(u.interaction_count, u.recent_items, u.seen_items) for u in result.users] == [
            expected(old + later)[0]
        ]
        assert await store.users_without_state([0, 5]) == [5]
        # the seed is ignored once the user has state
        result = await store.apply(later[:1], seeds={0: (999, [1], [1])}, now_us=1)
        assert result.users[0].interaction_count == base[0] + 30

    run(check)


def test_ctr_is_joined_to_the_served_record_once() -> None:
    async def check(store: StateStore) -> None:
        await store.store_served(
            [ServedRecord(request_id="r1", user_id=1, tier="two_tower", model_version="v3", ts=T0)]
        )

        def ev(i: int, kind: str, req: str | None) -> Event:
            return Event.model_validate(
                {
                    "event_id": f"c{i}",
                    "user_id": 1,
                    "item_id": i,
                    "type": kind,
                    "timestamp": T0,
                    "request_id": req,
                }
            )

        batch = [
            ev(1, "impression", "r1"),
            ev(2, "impression", "r1"),
            ev(3, "click", "r1"),
            ev(4, "impression", "zz"),
            ev(5, "click", None),
            ev(6, "view", "r1"),
        ]
        result = await store.apply(batch + batch[:3], seeds={}, now_us=1)
        assert sorted(result.ctr) == sorted(
            [("two_tower", "v3", "impressions")] * 2
            + [
                ("two_tower", "v3", "clicks"),
                ("unknown", "unknown", "impressions"),
                ("unknown", "unknown", "clicks"),
            ]
        )
        raw: dict[bytes, bytes] = await store.client.hgetall(store.prefix + "ctr")  # type: ignore[misc]
        assert raw[b"two_tower\tv3\timpressions"] == b"2" and raw[b"two_tower\tv3\tclicks"] == b"1"
        project = store.prefix.removeprefix("cascade:events:").rstrip(":")
        table = online_table(REDIS_URL, project=project)
        assert table == [
            {"tier": "two_tower", "model_version": "v3", "impressions": 2, "clicks": 1, "ctr": 0.5},
            {
                "tier": "unknown",
                "model_version": "unknown",
                "impressions": 1,
                "clicks": 1,
                "ctr": 1.0,
            },
        ]
        assert online_table(REDIS_URL, project="nothing_here_" + project) == []

    run(check)
