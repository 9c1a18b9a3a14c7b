"""Online features from Feast, read without blocking the event loop, with a timeout.

On Redis, reads go straight to Feast's Redis layout (``cascade.runtime.feast_redis``: one
``HMGET`` of the user's hash, decoded like ``get_online_features(...).to_dict()``), with Feast
still the registry, schema and materializer; its ``get_online_features_async`` cost about 45%
of the gateway's CPU per request. The reader is built once from the opened store; where the
store is outside what it decodes (``UnsupportedLayout``: Redis Cluster or Sentinel, another
key serialization...) reads go through ``cascade.runtime.feature_online.read_user_features_async``
(Feast's async read), as they do on SQLite (local runs without Redis: the sync read in a worker
thread). The connection string gets short socket timeouts here, since redis-py waits seconds by
default (the direct read keeps the connect timeout and bounds each read itself). Any failure
becomes ``FeaturesUnavailable``; the chain then goes on with the tiers that need no features.

A batch (``read_many``, the batch route) is one round trip for all its users: one pipelined
``HMGET`` per user sent together on the direct path, one ``get_online_features`` call for all the
ids through Feast, under one timeout; a failure makes every user's features unavailable.

Transport failures come in more shapes than ``redis.RedisError``: a connection accepted then
reset (a proxy in front of a killed Redis, a load balancer, a restarting Redis) can surface from
redis-py's ``connect()`` as uvloop's ``RuntimeError: unable to perform operation on
<TCPTransport closed=True ...>``; those, ``OSError`` (``ConnectionError`` included) and timeouts
are all "features unavailable", never a 500.

The timeout bounds the whole read and starts when the read does. The direct read is awaited in
place and bounds itself (``FeastRedisReader.read``: ``asyncio.timeout``; redis-py closes a
connection whose send or read is cancelled, so a cut-off read never poisons the pool). Through
Feast, the read runs as a task that is cancelled and left to clean up in the background on
expiry (``asyncio.wait_for`` would wait for that cleanup), so the caller gives up at
``timeout_s`` even when Redis is frozen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cascade.runtime import feature_names as names
from cascade.runtime.feast_redis import ReadTimeout
from cascade.runtime.paths import Layout
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.tiers.types import UserFeatures

if TYPE_CHECKING:
    from feast import FeatureStore

    from cascade.runtime.feast_redis import FeastRedisReader

logger = logging.getLogger(__name__)


class FeaturesUnavailable(UpstreamError):
    """The online store did not answer in time or failed."""

    code = "features_unavailable"


class FeaturesTimedOut(FeaturesUnavailable, UpstreamTimeout):
    """The online store did not answer within the read's timeout."""


def _as_int(value: Any, default: int) -> int:
    return default if value is None else int(value)


def _ids(value: Any) -> tuple[int, ...]:
    return () if value is None else tuple(int(i) for i in value)


def parse_row(user_id: int, row: dict[str, Any]) -> UserFeatures | None:
    """One user's features from Feast's ``to_dict`` columns; None when the store has none."""
    if all(
        row.get(name) is None for name in names.USER_PROFILE_FEATURES + names.USER_ACTIVITY_FEATURES
    ):
        return None
    return UserFeatures(
        user_id=user_id,
        age_bucket=_as_int(row.get("age_bucket"), -1),
        country=str(row.get("country") or ""),
        interaction_count=_as_int(row.get("interaction_count"), 0),
        recent_items=_ids(row.get("recent_items")),
        seen_items=_ids(row.get("seen_items")),
    )


class FeastFeatureReader:
    """Reads ``names.USER_ONLINE_FEATURES`` for one user: ``direct`` when given, else Feast."""

    def __init__(self, store: FeatureStore, direct: FeastRedisReader | None = None) -> None:
        self.store = store
        self.direct = direct
        self.is_async = store.config.online_store.type == "redis"

    @classmethod
    def open(cls, *, layout: Layout, dataset: str, socket_timeout_s: float) -> FeastFeatureReader:
        """Open the data set's store (slow: imports Feast; call it off the event loop)."""
        from cascade.runtime.feature_store import open_store

        store = open_store(layout=layout, dataset=dataset)
        online = store.config.online_store
        if online.type == "redis" and "socket_timeout" not in online.connection_string:
            online.connection_string += (
                f",socket_timeout={socket_timeout_s},socket_connect_timeout={socket_timeout_s}"
            )
        store.list_feature_views()  # load the registry now, not on the first request
        direct = None
        if online.type == "redis":
            from cascade.runtime.feast_redis import FeastRedisReader, UnsupportedLayout

            try:
                direct = FeastRedisReader.from_store(store, names.USER_ONLINE_FEATURES)
            except UnsupportedLayout as exc:
                logger.warning("feature reads go through Feast (no direct Redis read): %s", exc)
        return cls(store, direct)

    async def start(self) -> None:
        if self.is_async and self.direct is None:
            await self.store.initialize()

    async def close(self) -> None:
        from cascade.runtime.feature_online import aclose

        if self.direct is not None:
            import redis

            try:
                await self.direct.aclose()
            except redis.RedisError as exc:  # e.g. a close that outlived the connect timeout
                logger.warning("closing the feature store's Redis client: %r", exc)
        if self.is_async:
            await aclose(self.store)  # also closes the redis-py asyncio client Feast leaves open

    async def read(self, user_id: int, *, timeout_s: float) -> UserFeatures | None:
        """The user's features, None for a user the store does not have."""
        if self.direct is not None:
            return await self._read_direct(self.direct, user_id, timeout_s)
        return await self._read_feast(user_id, timeout_s)

    async def read_many(
        self, user_ids: Sequence[int], *, timeout_s: float
    ) -> dict[int, UserFeatures | None]:
        """Each distinct user's features (None: the store does not have the user), in one
        round trip; ``FeaturesUnavailable`` / ``FeaturesTimedOut`` for all of them."""
        ids = list(dict.fromkeys(int(u) for u in user_ids))
        if self.direct is not None:
            return await self._read_many_direct(self.direct, ids, timeout_s)
        rows = await self._read_feast_rows(ids, timeout_s)
        return {u: parse_row(u, rows.get(u, {})) for u in ids}

    @staticmethod
    async def _read_many_direct(
        direct: FeastRedisReader, ids: list[int], timeout_s: float
    ) -> dict[int, UserFeatures | None]:
        import redis

        client: Any = direct.client
        try:
            async with asyncio.timeout(timeout_s):
                pipe = client.pipeline(transaction=False)
                for u in ids:
                    pipe.execute_command("HMGET", direct.key(u), *direct.fields)
                replies = await pipe.execute()
        except TimeoutError as exc:
            raise FeaturesTimedOut(
                f"batch feature read timed out after {timeout_s * 1000:.0f} ms"
            ) from exc
        # The same failure family as the single read: never a bare Exception.
        except (redis.RedisError, OSError, RuntimeError, EOFError) as exc:
            raise FeaturesUnavailable(f"batch feature read failed: {exc!r}") from exc
        return {u: parse_row(u, direct.decode(raw)) for u, raw in zip(ids, replies, strict=True)}

    @staticmethod
    async def _read_direct(
        direct: FeastRedisReader, user_id: int, timeout_s: float
    ) -> UserFeatures | None:
        import redis

        try:
            row = await direct.read(user_id, timeout_s=timeout_s)  # timed from here
        except ReadTimeout as exc:
            raise FeaturesTimedOut(
                f"feature read timed out after {timeout_s * 1000:.0f} ms"
            ) from exc
        # Socket errors, timeouts, and the RuntimeError uvloop raises for an operation on a
        # transport the peer reset; never a bare Exception (a bug should stay visible).
        except (redis.RedisError, OSError, RuntimeError, EOFError) as exc:
            raise FeaturesUnavailable(f"feature read failed: {exc!r}") from exc
        return parse_row(user_id, row)

    async def _read_feast(self, user_id: int, timeout_s: float) -> UserFeatures | None:
        users = await self._read_feast_rows([user_id], timeout_s)
        return parse_row(user_id, users.get(user_id, {}))

    async def _read_feast_rows(self, user_ids: list[int], timeout_s: float) -> dict[int, Any]:
        import redis

        from cascade.runtime.feature_online import read_user_features_async

        task = asyncio.ensure_future(read_user_features_async(self.store, user_ids))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
        except BaseException:  # our caller was cancelled: stop the read too
            _abandon(task)
            raise
        if not done:
            _abandon(task)
            raise FeaturesTimedOut(f"feature read timed out after {timeout_s * 1000:.0f} ms")
        try:
            users = task.result()
        # Socket errors, timeouts, and the RuntimeError uvloop raises for an operation on a
        # transport the peer reset; never a bare Exception (a bug should stay visible).
        except (redis.RedisError, OSError, TimeoutError, RuntimeError, EOFError) as exc:
            raise FeaturesUnavailable(f"feature read failed: {exc!r}") from exc
        except asyncio.CancelledError as exc:  # the read's task, not ours (no await here)
            raise FeaturesUnavailable("feature read cancelled") from exc
        return dict(users)


def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a read we no longer wait for; its outcome is retrieved so nothing is logged."""
    task.cancel()
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("abandoned feature read ended with %r", task.exception())
