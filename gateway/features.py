"""Online features from Feast, read without blocking the event loop, with a timeout.

Redis online store: Feast's ``get_online_features_async`` (redis-py asyncio; the connection
string gets short socket timeouts, since redis-py waits seconds by default). SQLite online store
(local runs without Redis): the sync read in a worker thread. Any failure becomes
``FeaturesUnavailable``; the chain then goes on with the tiers that need no features.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from cascade.features import names
from cascade.paths import Layout
from gateway.errors import UpstreamError
from gateway.tiers import UserFeatures

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)


class FeaturesUnavailable(UpstreamError):
    """The online store did not answer in time or failed."""

    code = "features_unavailable"


def _as_int(value: Any, default: int) -> int:
    return default if value is None else int(value)


def parse_row(user_id: int, row: dict[str, Any]) -> UserFeatures | None:
    """One user's features from Feast's ``to_dict`` columns; None when the store has none."""
    if all(row.get(name) is None for name in names.USER_PROFILE_FEATURES + names.USER_ACTIVITY_FEATURES):
        return None
    return UserFeatures(
        user_id=user_id,
        age_bucket=_as_int(row.get("age_bucket"), -1),
        country=str(row.get("country") or ""),
        interaction_count=_as_int(row.get("interaction_count"), 0),
        recent_items=tuple(int(i) for i in (row.get("recent_items") or ())),
        seen_items=tuple(int(i) for i in (row.get("seen_items") or ())),
    )


class FeastFeatureReader:
    """Reads ``names.USER_ONLINE_FEATURES`` for one user."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.is_async = store.config.online_store.type == "redis"

    @classmethod
    def open(cls, *, layout: Layout, dataset: str, socket_timeout_s: float) -> FeastFeatureReader:
        """Open the data set's store (slow: imports Feast; call it off the event loop)."""
        from cascade.features.store import open_store

        store = open_store(layout=layout, dataset=dataset)
        online = store.config.online_store
        if online.type == "redis" and "socket_timeout" not in online.connection_string:
            online.connection_string += (
                f",socket_timeout={socket_timeout_s},socket_connect_timeout={socket_timeout_s}"
            )
        store.list_feature_views()  # load the registry now, not on the first request
        return cls(store)

    async def start(self) -> None:
        if self.is_async:
            await self.store.initialize()

    async def close(self) -> None:
        if self.is_async:
            await self.store.close()

    async def read(self, user_id: int, *, timeout_s: float) -> UserFeatures | None:
        """The user's features, None for a user the store does not have."""
        import redis

        rows = [{names.USER_JOIN_KEY: user_id}]
        try:
            if self.is_async:
                call = self.store.get_online_features_async(
                    features=names.USER_ONLINE_FEATURES, entity_rows=rows
                )
                response = await asyncio.wait_for(call, timeout_s)
            else:
                response = await asyncio.wait_for(
                    asyncio.to_thread(
                        self.store.get_online_features, features=names.USER_ONLINE_FEATURES, entity_rows=rows
                    ),
                    timeout_s,
                )
        except TimeoutError as exc:
            raise FeaturesUnavailable(f"feature read timed out after {timeout_s * 1000:.0f} ms") from exc
        except (redis.RedisError, OSError, ConnectionError) as exc:
            raise FeaturesUnavailable(f"feature read failed: {exc!r}") from exc
        columns = response.to_dict()
        return parse_row(user_id, {key: values[0] for key, values in columns.items()})
