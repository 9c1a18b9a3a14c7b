"""User features read straight from Feast's Redis online store: one ``HMGET`` per read.

Feast stays the registry, the schema and the materializer; this module only reads the bytes
Feast 0.67's ``RedisOnlineStore`` wrote (``feast/infra/online_stores/redis.py``), without
``get_online_features_async``'s per-call work (registry lookups, proto responses, the
``to_dict`` conversion). The layout, for entity key serialization version 3:

- one Redis hash per entity: key ``serialize_entity_key(entity_key) + project`` (so every view
  of the ``user`` entity lives in the same hash);
- one field per feature: ``_mmh3(f"{view}:{feature}")`` (4 bytes), value a serialized
  ``ValueProto``; and one ``_ts:{view}`` field per view holding its event timestamp.

So a read is a single ``HMGET`` of the user's hash for the requested features (Feast issues
one per view, pipelined, on that same key). Missing fields (an unknown user, a view never
materialized for the user, a key expired by ``key_ttl_seconds``) decode to ``None``, as in
Feast. TTL: Feast's online read does not filter by the views' ``ttl`` (every value found comes
back with status PRESENT: ``utils._populate_response_from_feature_data``; the ``_ts`` field only
feeds the response's event timestamps, which ``to_dict`` drops), so neither does this reader,
and it does not fetch ``_ts``.

Values decode to what ``OnlineResponse.to_dict`` returns (``type_map.
feast_value_type_to_python_type``): plain scalars and lists of scalars inline, any other kind
(maps, UUIDs, timestamps, JSON...) through Feast's own function.

Timeouts and cancellation: ``read`` takes its timeout and bounds the whole round trip with
``asyncio.timeout``, started when the read starts. On expiry redis-py sees the cancellation in
its send or read and closes that connection at once (``disconnect(nowait=True)`` on any
``BaseException``), so a cut-off read never goes back to the pool with its reply still to come
(and the pool drops a connection with unread data when it hands one out). The client therefore
sets no redis-py ``socket_timeout`` (the deadline is the read timeout), only
``socket_connect_timeout``: with a ``socket_timeout`` redis-py wraps every send in
``asyncio.wait_for`` (a task per command: tens of microseconds of CPU per read on the shared
2-core machine; and Python 3.11's ``wait_for`` can swallow a cancellation that lands as the
send completes) and every read in a second timeout.

This module imports no Feast at import time (``import feast`` loads pandas; the gateway's
import must not): ``FeastRedisReader.from_store`` takes an opened ``FeatureStore`` (Feast is
loaded by then) and imports Feast's proto class and helpers there.
"""

from __future__ import annotations

import asyncio
import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from feast import FeatureStore

Decoder = Callable[[bytes | None], Any]

SERIALIZATION_VERSION = 3  # the only entity key serialization this reader writes keys for
# feast.protos.feast.types.Value_pb2.ValueType numbers used in the serialized entity key.
_VALUE_TYPE_STRING = 2
_VALUE_TYPE_INT64 = 4
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")

# ValueProto oneof fields decoded inline, as feast_value_type_to_python_type returns them.
_SCALARS = frozenset(
    {"int64_val", "int32_val", "string_val", "bytes_val", "double_val", "float_val", "bool_val"}
)
_LISTS = frozenset(
    {
        "int64_list_val",
        "int32_list_val",
        "string_list_val",
        "bytes_list_val",
        "double_list_val",
        "float_list_val",
        "bool_list_val",
    }
)
# Feast ValueType names whose values decode inline (others: Feast's own conversion, e.g. UUIDs
# stored as string_val, which Feast turns into uuid.UUID by the declared type).
_PLAIN_TYPES = frozenset(
    {"INT64", "INT32", "STRING", "BYTES", "DOUBLE", "FLOAT", "BOOL"}
    | {f"{t}_LIST" for t in ("INT64", "INT32", "STRING", "BYTES", "DOUBLE", "FLOAT", "BOOL")}
)


class ReadTimeout(TimeoutError):
    """The read did not finish within its timeout."""


class LagAwareDeadline:
    """Expires ``deadline`` after ``timeout_s`` of the read, not of the event loop's backlog.

    When the check runs late (the loop was busy with other requests, or the process was
    throttled by a CPU quota), the reply may already be in the socket with its callbacks queued
    behind that backlog: giving up then would blame Redis for the gateway's own lag, turn a
    busy gateway's answers into fallbacks and close a healthy connection (more work next time:
    the metastable loop of issue 15). So a check that runs more than ``GRACE_S`` late extends
    the deadline once, by how late it ran (at most ``timeout_s``); a second late check expires
    it. On a loop that keeps up, the deadline is exactly ``timeout_s``.
    """

    GRACE_S = 0.002

    def __init__(self, deadline: asyncio.Timeout, timeout_s: float) -> None:
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.extended_by = 0.0
        self._loop = asyncio.get_running_loop()
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._due = self._loop.time() + self.timeout_s
        self._handle = self._loop.call_at(self._due, self._check)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        late = now - self._due
        if late > self.GRACE_S and not self.extended_by:
            self.extended_by = min(late, self.timeout_s)
            self._due = now + self.extended_by
            self._handle = self._loop.call_at(self._due, self._check)
            return
        self.deadline.reschedule(now)  # expires it: the read is cancelled


class UnsupportedLayout(Exception):
    """The store's config or views are outside what this reader decodes; use Feast's read."""


def int64_key_prefix(join_key: str) -> bytes:
    """The bytes before the value in a one-join-key, int64 entity key (serialization v3).

    Re-implements ``feast.infra.key_encoding_utils.serialize_entity_key`` for this one case
    (importing it imports Feast, hence pandas): ``<u32 number of keys> (<u32 STRING> <u32 len>
    key)* (<u32 value type> <u32 len> value)*``, little-endian; the value follows as ``<i64>``.
    """
    name = join_key.encode("utf-8")
    return (
        _U32.pack(1)
        + _U32.pack(_VALUE_TYPE_STRING)
        + _U32.pack(len(name))
        + name
        + _U32.pack(_VALUE_TYPE_INT64)
        + _U32.pack(8)
    )


def redis_key(project: str, join_key: str, value: int) -> bytes:
    """Feast's Redis hash key for the entity ``{join_key: value}`` (int64) in ``project``."""
    return int64_key_prefix(join_key) + _I64.pack(value) + project.encode("utf-8")


def plain_decoder(value_cls: Any, other: Callable[[Any], Any]) -> Decoder:
    """A decoder of ``ValueProto`` bytes: an empty or missing field or an unset oneof is
    ``None``, plain scalars and lists decode inline, any other kind through ``other`` (Feast's
    ``feast_value_type_to_python_type``, for a ``null_val`` or data that disagrees with the
    declared type)."""
    parse = value_cls.FromString

    def decode(raw: bytes | None) -> Any:
        if not raw:
            return None
        value = parse(raw)
        kind = value.WhichOneof("val")
        if kind is None:
            return None
        if kind in _SCALARS:
            return getattr(value, kind)
        if kind in _LISTS:
            return list(getattr(value, kind).val)
        return other(value)

    return decode


def feast_decoder(value_cls: Any, convert: Callable[[Any], Any]) -> Decoder:
    """A decoder through ``convert`` (Feast's ``feast_value_type_to_python_type``) alone."""
    parse = value_cls.FromString

    def decode(raw: bytes | None) -> Any:
        return convert(parse(raw) if raw else value_cls())

    return decode


@dataclass(frozen=True)
class FeastRedisReader:
    """Reads one int64 entity's features from Feast's Redis layout with one ``HMGET``.

    ``read(entity_id)`` returns ``{feature: value}`` under the plain feature names, in the order
    the refs were given, like one row of ``get_online_features(...).to_dict()``.
    """

    client: aioredis.Redis
    key_prefix: bytes  # serialized entity key up to the int64 value
    key_suffix: bytes  # the project name
    names: tuple[str, ...]
    fields: tuple[bytes, ...]
    decoders: tuple[Decoder, ...]

    def key(self, entity_id: int) -> bytes:
        return self.key_prefix + _I64.pack(entity_id) + self.key_suffix

    async def read(self, entity_id: int, *, timeout_s: float) -> dict[str, Any]:
        """The entity's row; ``ReadTimeout`` after ``timeout_s`` (counted from this call), else
        redis-py's errors (``redis.RedisError``, ``OSError``, uvloop's ``RuntimeError`` for a
        transport the peer reset)."""
        client: Any = self.client  # redis-py's execute_command is untyped
        deadline = asyncio.timeout(None)
        watchdog = LagAwareDeadline(deadline, timeout_s)
        try:
            async with deadline:
                watchdog.start()
                raw = await client.execute_command("HMGET", self.key(entity_id), *self.fields)
        except TimeoutError as exc:
            if deadline.expired():
                raise ReadTimeout(f"no reply within {timeout_s * 1000:.0f} ms") from exc
            raise
        finally:
            watchdog.cancel()
        return self.decode(raw)

    def decode(self, raw: Sequence[bytes | None]) -> dict[str, Any]:
        """The row for one ``HMGET`` reply (what ``read`` returns)."""
        return {n: d(r) for n, d, r in zip(self.names, self.decoders, raw, strict=True)}

    async def aclose(self) -> None:
        await self.client.aclose()

    @classmethod
    def from_store(
        cls,
        store: FeatureStore,
        refs: Sequence[str],
        *,
        client: aioredis.Redis | None = None,
    ) -> FeastRedisReader:
        """A reader for ``refs`` (``view:feature``) of an opened store on Redis.

        Reads the project, key serialization and views (features, value types, entity) from
        the store's config and registry once. ``client`` defaults to ``client_for(store)``.
        Raises ``UnsupportedLayout`` for what it does not decode (not plain Redis, another key
        serialization, views over several entities or a non-int64 join key).
        """
        from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto
        from feast.type_map import feast_value_type_to_python_type
        from feast.value_type import ValueType

        config = store.config
        online = config.online_store
        if online.type != "redis" or getattr(online, "redis_type", "redis") != "redis":
            raise UnsupportedLayout(f"online store {online.type!r} is not a single Redis")
        if config.entity_key_serialization_version != SERIALIZATION_VERSION:
            raise UnsupportedLayout(
                f"entity_key_serialization_version={config.entity_key_serialization_version}"
            )
        versioned = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))

        join_key: str | None = None
        names: list[str] = []
        fields: list[bytes] = []
        decoders: list[Decoder] = []
        for ref in refs:
            view_name, feature = ref.split(":", 1)
            view = store.get_feature_view(view_name)
            if len(view.entities) != 1:
                raise UnsupportedLayout(f"view {view_name!r} has entities {view.entities}")
            entity = store.get_entity(view.entities[0])
            if entity.value_type != ValueType.INT64:
                raise UnsupportedLayout(f"entity {entity.name!r} is {entity.value_type}")
            if join_key not in (None, entity.join_key):
                raise UnsupportedLayout(f"views over several join keys: {join_key}, {ref}")
            join_key = entity.join_key
            by_name = {f.name: f for f in view.features}
            if feature not in by_name:
                raise UnsupportedLayout(f"{ref}: no such feature in the registry")
            value_type = by_name[feature].dtype.to_value_type()
            names.append(feature)
            fields.append(_mmh3(f"{compute_versioned_name(view, versioned)}:{feature}"))
            convert = functools.partial(feast_value_type_to_python_type, feature_type=value_type)
            if value_type.name in _PLAIN_TYPES:
                decoders.append(plain_decoder(ValueProto, convert))
            else:
                decoders.append(feast_decoder(ValueProto, convert))
        if join_key is None:
            raise UnsupportedLayout("no features requested")
        return cls(
            client=client if client is not None else client_for(store),
            key_prefix=int64_key_prefix(join_key),
            key_suffix=config.project.encode("utf-8"),
            names=tuple(names),
            fields=tuple(fields),
            decoders=tuple(decoders),
        )


def client_for(store: FeatureStore) -> aioredis.Redis:
    """A redis-py asyncio client from the store's connection string, as Feast builds its own
    (``RedisOnlineStore._get_client_async``: host, port, then every ``name=value`` option, so
    ``db``, ``password``, ``ssl`` and ``socket_connect_timeout`` carry over) but without
    ``socket_timeout`` (``read`` bounds each read; see the module docstring), retrying once at
    once: a pooled connection the server closed is re-opened without a backoff sleep."""
    import redis.asyncio as aioredis
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    nodes, kwargs = RedisOnlineStore._parse_connection_string(
        store.config.online_store.connection_string
    )
    kwargs.pop("socket_timeout", None)
    kwargs.setdefault("retry", Retry(NoBackoff(), 1))
    return aioredis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **kwargs)
