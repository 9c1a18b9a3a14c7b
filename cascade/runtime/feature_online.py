"""Online user features, read from the Feast online store (Redis, or SQLite locally).

Both readers return ``{user_id: {feature: value}}`` for the user features in
``names.USER_ONLINE_FEATURES`` under their plain names (``age_bucket``, ``country``,
``interaction_count``, ``recent_items``, ``seen_items``). Lists come back as Python lists of int.
A user the online store does not know (never materialized, or a new user) comes back with every
value ``None``: callers treat that as a cold start. Duplicate ids are read once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from cascade.runtime import feature_names as names

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.online_response import OnlineResponse

FEATURES = names.USER_ONLINE_FEATURES
_ASYNC_STORES = frozenset({"redis"})  # online stores with a native async read in Feast 0.67
_PLAIN = [ref.split(":", 1)[1] for ref in FEATURES]


def _entity_rows(user_ids: list[int]) -> dict[str, list[int]]:
    unique = list(dict.fromkeys(int(u) for u in user_ids))
    return {names.USER_JOIN_KEY: unique}


def _to_users(response: OnlineResponse) -> dict[int, dict[str, Any]]:
    data = response.to_dict()
    ids = data[names.USER_JOIN_KEY]
    return {int(uid): {name: _plain(data[name][i]) for name in _PLAIN} for i, uid in enumerate(ids)}


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    return value


def read_user_features(store: FeatureStore, user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """User features for ``user_ids`` (sync); unknown users map to all-``None`` values."""
    if not user_ids:
        return {}
    response = store.get_online_features(features=FEATURES, entity_rows=_entity_rows(user_ids))
    return _to_users(response)


async def read_user_features_async(
    store: FeatureStore, user_ids: list[int]
) -> dict[int, dict[str, Any]]:
    """Like ``read_user_features`` without blocking the event loop.

    Redis: ``get_online_features_async``. SQLite has no async read in Feast 0.67
    (``NotImplementedError``), so there the sync read runs in a worker thread.
    """
    if not user_ids:
        return {}
    if store.config.online_store.type not in _ASYNC_STORES:
        return await asyncio.to_thread(read_user_features, store, user_ids)
    response = await store.get_online_features_async(
        features=FEATURES, entity_rows=_entity_rows(user_ids)
    )
    return _to_users(response)


async def aclose(store: FeatureStore) -> None:
    """Close the store's async online-store client; call it where the event loop ends.

    Feast 0.67's ``FeatureStore.close()`` reaches ``RedisOnlineStore.close()``, which is a no-op:
    the redis-py asyncio client it opened for ``get_online_features_async`` stays open (a
    ``ResourceWarning`` once the loop is gone). So this also closes that client, through Feast's
    private ``_client_async`` attribute (checked by a test against the pinned version).
    """
    await store.close()
    online_store: Any = store._get_provider().online_store
    client = getattr(online_store, "_client_async", None)
    if client is not None:
        await client.aclose()
        online_store._client_async = None
