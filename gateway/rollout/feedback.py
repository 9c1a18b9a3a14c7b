"""Clicks and impressions per model version for the controller's CTR check.

The counters are one Redis hash, ``<prefix>:feedback``, fields ``<model_version>:impressions``
and ``<model_version>:clicks`` (``two_tower/3:clicks``), cumulative: whoever joins feedback
events to the answers that showed the items adds to them (the drill's click model does; the
events consumer is meant to). The controller diffs them against their value at each step's
first look, so the counters never need resetting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redis.exceptions import RedisError

from gateway.rollout.store import RolloutStore, StoreUnavailable


def feedback_key(prefix: str) -> str:
    return f"{prefix}:feedback"


class RedisFeedback:
    """A ``CtrSource`` over the feedback hash of ``store``'s prefix."""

    def __init__(self, store: RolloutStore) -> None:
        self.store = store
        self.key = feedback_key(store.prefix)

    async def __call__(self, labels: Sequence[str]) -> Mapping[str, tuple[int, int]]:
        fields = [f"{label}:{f}" for label in labels for f in ("impressions", "clicks")]
        try:
            raw = await self.store.client.hmget(self.key, fields)  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"rollout feedback counters unreadable: {exc!r}") from exc
        values = [int(v) if v is not None else 0 for v in raw]
        return {label: (values[2 * i], values[2 * i + 1]) for i, label in enumerate(labels)}


class EventsConsumerCtr:
    """A ``CtrSource`` over the feedback-events consumer's own counters: the hash
    ``cascade:events:<feast project>:ctr`` (``GATEWAY_ROLLOUT_EVENTS_CTR_KEY``), fields
    ``<tier>\\t<model_version>\\timpressions|clicks``, as ``events.state`` (their producer) writes
    them; ``tests/rollout/test_feedback.py`` checks that both sides agree. Read through the rollout
    store's client: that Redis must be the consumer's (the online store's) Redis."""

    TIER = "two_tower"

    def __init__(self, store: RolloutStore, key: str) -> None:
        self.store = store
        self.key = key

    @classmethod
    def field(cls, model_version: str, kind: str) -> str:
        return f"{cls.TIER}\t{model_version}\t{kind}"

    async def __call__(self, labels: Sequence[str]) -> Mapping[str, tuple[int, int]]:
        fields = [self.field(label, f) for label in labels for f in ("impressions", "clicks")]
        try:
            raw = await self.store.client.hmget(self.key, fields)  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"events CTR counters unreadable: {exc!r}") from exc
        values = [int(v) if v is not None else 0 for v in raw]
        return {label: (values[2 * i], values[2 * i + 1]) for i, label in enumerate(labels)}
