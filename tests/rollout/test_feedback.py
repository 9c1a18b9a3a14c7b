"""The controller's CTR sources read what their producers write: the events consumer's hash
(field layout from ``events.state``, its producer) and the rollout's own feedback hash."""

from __future__ import annotations

import asyncio

from events import state as events_state
from gateway.rollout.feedback import EventsConsumerCtr, RedisFeedback, feedback_key
from gateway.rollout.store import RolloutStore, connect
from tests.rollout.conftest import REDIS_URL


def test_events_consumer_layout_agrees() -> None:
    field = EventsConsumerCtr.field("two_tower/7", "clicks")
    assert events_state._ctr_label(field) == ("two_tower", "two_tower/7", "clicks")
    assert events_state.CTR_KINDS["click"] == "clicks"
    assert events_state.CTR_KINDS["impression"] == "impressions"
    assert events_state.key_prefix("cascade_demo") + events_state.CTR_HASH == (
        "cascade:events:cascade_demo:ctr"
    )


def test_both_sources_read_their_hash(prefix: str) -> None:
    async def main() -> tuple[object, object]:
        store = RolloutStore(connect(REDIS_URL), prefix=prefix)
        try:
            events_key = f"{prefix}:events-ctr"
            await store.client.hset(events_key, mapping={
                EventsConsumerCtr.field("two_tower/2", "impressions"): 100,
                EventsConsumerCtr.field("two_tower/2", "clicks"): 7,
                "als\ttwo_tower/2\tclicks": 99,  # another tier: not the model's
            })  # fmt: skip
            await store.client.hset(feedback_key(prefix), mapping={"two_tower/2:impressions": 50})
            labels = ["two_tower/2", "two_tower/3"]
            return (
                await EventsConsumerCtr(store, events_key)(labels),
                await RedisFeedback(store)(labels),
            )
        finally:
            await store.close()

    events, own = asyncio.run(main())
    assert events == {"two_tower/2": (100, 7), "two_tower/3": (0, 0)}
    assert own == {"two_tower/2": (50, 0), "two_tower/3": (0, 0)}
