"""The direct Redis read of Feast's online store (``cascade.runtime.feast_redis``) equals Feast's.

Unit tests check the entity key against Feast's own ``_redis_key`` and the value decoding against
Feast's ``feast_value_type_to_python_type``; fault tests point a direct reader at servers that
reset, freeze or refuse connections; integration tests materialize a small data set with Feast
into the real Redis and compare every user's direct read with ``get_online_features``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import uuid as uuid_module
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pytest
import uvloop

from cascade.runtime import feature_names as names
from cascade.runtime import schema
from cascade.runtime.feast_redis import (
    FeastRedisReader,
    feast_decoder,
    int64_key_prefix,
    plain_decoder,
    redis_key,
)
from cascade.runtime.feature_store import open_store
from cascade.runtime.paths import Layout
from gateway.tiers.features import FeastFeatureReader, FeaturesUnavailable, parse_row
from tests.features.conftest import DATASET, REDIS_URL, delete_project_keys, write_tables

# -- unit: keys and values, against Feast's own functions ----------------------------------------


@pytest.mark.parametrize("user_id", [0, 1, 255, 2**31, 2**53 - 1, 2**63 - 1, -1])
def test_redis_key_is_feasts(user_id: int) -> None:
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    entity = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=user_id)])
    assert redis_key("cascade_x", "user_id", user_id) == _redis_key("cascade_x", entity, 3)


def _values() -> list[Any]:
    from feast.protos.feast.types.Value_pb2 import (
        BoolList,
        DoubleList,
        Int32List,
        Int64List,
        Null,
        StringList,
        Value,
    )

    return [
        Value(),
        Value(null_val=Null.NULL),
        Value(int64_val=0),
        Value(int64_val=-(2**63)),
        Value(int64_val=42),
        Value(int32_val=-7),
        Value(string_val=""),
        Value(string_val="FR"),
        Value(string_val="zürich"),
        Value(bytes_val=b"\x00\x01"),
        Value(double_val=0.1),
        Value(float_val=1.5),
        Value(bool_val=True),
        Value(bool_val=False),
        Value(int64_list_val=Int64List(val=[])),
        Value(int64_list_val=Int64List(val=[3, 1, 2**62])),
        Value(int32_list_val=Int32List(val=[1, -1])),
        Value(string_list_val=StringList(val=["a", ""])),
        Value(double_list_val=DoubleList(val=[0.5])),
        Value(bool_list_val=BoolList(val=[True, False])),
        Value(unix_timestamp_val=1_700_000_000),
    ]


def test_decoding_is_feasts() -> None:
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    decode = plain_decoder(Value, feast_value_type_to_python_type)
    for value in _values():
        raw = value.SerializeToString()
        want = feast_value_type_to_python_type(Value.FromString(raw))
        got = decode(raw)
        assert got == want and type(got) is type(want), (value, got, want)
        if isinstance(want, list):
            assert [type(v) for v in got] == [type(v) for v in want]
    # A field the hash does not have (HMGET nil) and an empty one: None, as Feast reads them.
    assert decode(None) is None and decode(b"") is None


def test_declared_types_feast_converts_go_through_feast() -> None:
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type
    from feast.value_type import ValueType

    text = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

    def convert(value: Any) -> Any:
        return feast_value_type_to_python_type(value, ValueType.UUID)

    decode = feast_decoder(Value, convert)
    assert decode(Value(string_val=text).SerializeToString()) == uuid_module.UUID(text)
    assert decode(None) is None


# -- faults: a direct reader against servers that reset, freeze or refuse ----------------------


@contextlib.contextmanager
def _server(mode: str) -> Iterator[int]:
    """A port whose server resets each connection (``reset``) or reads and never answers
    (``frozen``); ``refused``: a port nobody listens on."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    if mode == "refused":
        server.close()
        yield port
        return
    server.listen(64)
    server.settimeout(0.05)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:
                held.append(conn)  # frozen: accepted, never answered

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()
        for conn in held:
            conn.close()


def _direct(port: int, connect_timeout_s: float) -> FeastRedisReader:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = aioredis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=connect_timeout_s,
        retry=Retry(NoBackoff(), 1),
    )
    return FeastRedisReader(
        client=client,
        key_prefix=int64_key_prefix("user_id"),
        key_suffix=b"cascade",
        names=("age_bucket",),
        fields=(b"\x01\x02\x03\x04",),
        decoders=(lambda raw: raw,),
    )


@pytest.mark.parametrize("mode", ["reset", "frozen", "refused"])
@pytest.mark.parametrize(("timeout_s", "connect_timeout_s"), [(0.03, 0.05), (0.2, 0.02)])
def test_direct_read_faults_are_unavailable_within_the_timeout(
    mode: str, timeout_s: float, connect_timeout_s: float
) -> None:
    store = SimpleNamespace(config=SimpleNamespace(online_store=SimpleNamespace(type="redis")))

    async def main(port: int) -> list[float]:
        direct = _direct(port, connect_timeout_s)
        reader = FeastFeatureReader(store, direct)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        elapsed = []
        for user_id in range(5):
            started = loop.time()
            with pytest.raises(FeaturesUnavailable) as info:
                await reader.read(user_id, timeout_s=timeout_s)
            elapsed.append(loop.time() - started)
            assert info.value.code == "features_unavailable"
        await direct.aclose()
        return elapsed

    with _server(mode) as port:
        elapsed = uvloop.run(main(port))
    assert max(elapsed) < timeout_s + 0.05, elapsed


# -- integration: real Redis, real Feast materialization ------------------------------------------

FEATURES = [ref.split(":", 1)[1] for ref in names.USER_ONLINE_FEATURES]
PROFILE_ONLY, ACTIVITY_ONLY, EMPTY_VALUES, NULL_VALUES = 10_000, 10_001, 10_002, 10_003
UNKNOWN = [10_004, 123_456_789, 2**53 - 1]


def _tables() -> dict[str, pd.DataFrame]:
    """The synthetic ``tiny`` data set's user tables plus users that leave some features unset:
    a profile only, activity only, empty lists and strings, nulls."""
    from cascade.data.features import build_feature_tables
    from cascade.data.synthetic import generate

    tables = build_feature_tables(generate(scale="tiny", seed=7))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    profile = pd.DataFrame(
        {
            schema.USER_ID: [PROFILE_ONLY, EMPTY_VALUES, NULL_VALUES],
            schema.EVENT_TIMESTAMP: t0,
            "age_bucket": [4, 0, 1],
            "country": ["DE", "", None],
        }
    )
    activity = pd.DataFrame(
        {
            schema.USER_ID: [ACTIVITY_ONLY, EMPTY_VALUES, NULL_VALUES],
            schema.EVENT_TIMESTAMP: t0,
            "interaction_count": [3, 0, 2],
            "recent_items": [[5, 6, 7], [], None],
            "seen_items": [[7, 6, 5], [], [1, 2]],
        }
    )
    for name, extra in ((schema.USER_PROFILE_FILE, profile), (schema.USER_ACTIVITY_FILE, activity)):
        tables[name] = pd.concat([tables[name], extra], ignore_index=True)
    return {k: tables[k] for k in (schema.USER_PROFILE_FILE, schema.USER_ACTIVITY_FILE)}


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Layout, list[int]]]:
    """A Feast project on the real Redis with ``_tables`` materialized by Feast; its users."""
    import redis

    from cascade.features import store

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    finally:
        client.close()
    home = tmp_path_factory.mktemp("feast_redis")
    project = f"cascade_test_{uuid_module.uuid4().hex[:10]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CASCADE_HOME", str(home))
        mp.setenv(names.PROJECT_ENV, project)
        mp.setenv("REDIS_URL", REDIS_URL)
        layout = Layout(home=home)
        tables = _tables()
        write_tables(layout.dataset_dir(DATASET) / schema.FEATURES_DIR, tables)
        # The item view's source must exist for apply; the gateway does not read it.
        write_tables(
            layout.dataset_dir(DATASET) / schema.FEATURES_DIR,
            {schema.ITEM_FEATURES_FILE: _items()},
        )
        try:
            store.apply(layout=layout, dataset=DATASET)
            store.materialize(
                layout=layout,
                dataset=DATASET,
                engine="feast",
                views=[names.USER_PROFILE, names.USER_ACTIVITY],
            )
            users = sorted(
                {int(u) for df in tables.values() for u in df[schema.USER_ID]}.union(UNKNOWN)
            )
            yield layout, users
        finally:
            delete_project_keys(REDIS_URL, project)


def _items() -> pd.DataFrame:
    import numpy as np

    return pd.DataFrame(
        {
            schema.ITEM_ID: [0],
            schema.EVENT_TIMESTAMP: datetime(2026, 1, 1, tzinfo=UTC),
            "category": ["a"],
            "price_bucket": [1],
            "popularity": [1],
            "age_days": np.array([1.5], dtype=np.float32),
        }
    )


def _feast_rows(layout: Layout, users: list[int]) -> dict[int, dict[str, Any]]:
    """Feast's own read (sync ``get_online_features``), one row per user."""
    fs = open_store(layout=layout, dataset=DATASET)
    data = fs.get_online_features(
        features=names.USER_ONLINE_FEATURES, entity_rows={names.USER_JOIN_KEY: users}
    ).to_dict()
    return {u: {f: data[f][i] for f in FEATURES} for i, u in enumerate(users)}


def _same(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """Equal values and types (None stays None, ints stay ints, lists of int stay lists)."""
    if list(got) != list(want) or got != want:
        return False
    return all(type(got[f]) is type(want[f]) for f in want)


@pytest.mark.integration
def test_direct_read_equals_feast_for_every_user(materialized: tuple[Layout, list[int]]) -> None:
    layout, users = materialized
    want = _feast_rows(layout, users)
    fs = open_store(layout=layout, dataset=DATASET, redis_timeout_s=2.0)
    direct = FeastRedisReader.from_store(fs, names.USER_ONLINE_FEATURES)
    assert direct.names == tuple(FEATURES)

    async def main() -> dict[int, dict[str, Any]]:
        try:
            return {u: await direct.read(u, timeout_s=5.0) for u in users}
        finally:
            await direct.aclose()

    got = uvloop.run(main())
    wrong = {u: (got[u], want[u]) for u in users if not _same(got[u], want[u])}
    assert not wrong, wrong
    # The data set does exercise the None-ness: unknown users, half-known users, nulls.
    for u in UNKNOWN:
        assert got[u] == dict.fromkeys(FEATURES)
    assert got[PROFILE_ONLY]["interaction_count"] is None and got[PROFILE_ONLY]["country"] == "DE"
    assert got[ACTIVITY_ONLY]["age_bucket"] is None and got[ACTIVITY_ONLY]["recent_items"]
    assert got[EMPTY_VALUES]["recent_items"] == [] and got[EMPTY_VALUES]["country"] == ""
    assert sum(all(v is not None for v in row.values()) for row in got.values()) >= 300


@pytest.mark.integration
def test_gateway_reader_takes_the_direct_path_on_redis(
    materialized: tuple[Layout, list[int]],
) -> None:
    layout, users = materialized
    want = {u: parse_row(u, row) for u, row in _feast_rows(layout, users).items()}

    async def main() -> dict[int, Any]:
        reader = await asyncio.to_thread(  # as the gateway opens it: off the event loop
            FeastFeatureReader.open, layout=layout, dataset=DATASET, socket_timeout_s=0.5
        )
        assert reader.direct is not None
        await reader.start()
        try:
            return {u: await reader.read(u, timeout_s=5.0) for u in users}
        finally:
            await reader.close()

    assert uvloop.run(main()) == want


@contextlib.contextmanager
def _delaying_proxy(target_port: int, delay_s: float) -> Iterator[int]:
    """A TCP proxy to ``target_port`` that holds every reply chunk back ``delay_s``, in order
    (its own event loop, in a thread)."""
    loop = asyncio.new_event_loop()
    handlers: set[asyncio.Task[None]] = set()

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
    ) -> None:
        try:
            while data := await reader.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(pipe(reader, up_writer, 0.0), pipe(up_reader, writer, delay_s))
        finally:
            writer.close()
            up_writer.close()
            handlers.discard(task)

    async def stop() -> None:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await asyncio.sleep(0.01)  # let the closed transports finish closing

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


@pytest.mark.integration
def test_reads_cut_off_mid_flight_leave_no_stale_reply_behind(
    materialized: tuple[Layout, list[int]],
) -> None:
    """Behind a proxy that delays replies 5 ms, reads time out before the send, while the reply
    is on its way and just after it arrived; a connection left with a reply to come would answer
    a later read with an earlier user's row. Every later read must get its own user's row."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    layout, users = materialized
    want = {u: parse_row(u, row) for u, row in _feast_rows(layout, users).items()}
    fs = open_store(layout=layout, dataset=DATASET)
    rng = random.Random(0)
    delay_s = 0.005

    async def main(port: int) -> tuple[dict[str, int], dict[int, Any]]:
        client = aioredis.Redis(
            host="127.0.0.1", port=port, socket_connect_timeout=5.0, retry=Retry(NoBackoff(), 1)
        )
        direct = FeastRedisReader.from_store(fs, names.USER_ONLINE_FEATURES, client=client)
        reader = FeastFeatureReader(fs, direct)
        outcomes = {"answered": 0, "wrong": 0, "timed out": 0}

        async def cut(user_id: int) -> None:
            try:
                got = await reader.read(user_id, timeout_s=rng.uniform(0, 12 * delay_s))
            except FeaturesUnavailable:
                outcomes["timed out"] += 1
            else:
                outcomes["answered" if got == want[user_id] else "wrong"] += 1

        try:
            await asyncio.gather(*(reader.read(u, timeout_s=5.0) for u in users[:20]))  # pool
            for _ in range(15):
                await asyncio.gather(*(cut(u) for u in rng.sample(users, 20)))
            after: dict[int, Any] = {}
            for i in range(0, len(users), 20):  # 20 at a time: the proxy shares this process
                batch = users[i : i + 20]
                rows = await asyncio.gather(*(reader.read(u, timeout_s=5.0) for u in batch))
                after.update(zip(batch, rows, strict=True))
            return outcomes, after
        finally:
            await direct.aclose()

    with _delaying_proxy(urlparse(REDIS_URL).port or 6379, delay_s) as port:
        outcomes, got = uvloop.run(main(port))
    assert outcomes["timed out"] > 0 and outcomes["answered"] > 0, outcomes
    assert outcomes["wrong"] == 0, outcomes
    assert got == want


@pytest.mark.integration
def test_sqlite_store_reads_through_feast(sqlite_store: str, layout: Layout) -> None:
    from cascade.features import store

    folder = layout.dataset_dir(DATASET) / schema.FEATURES_DIR
    tables = {k: df[df[schema.USER_ID].isin([0, 1, PROFILE_ONLY])] for k, df in _tables().items()}
    write_tables(folder, {**tables, schema.ITEM_FEATURES_FILE: _items()})
    store.apply(layout=layout, dataset=DATASET)
    store.materialize(
        layout=layout, dataset=DATASET, views=[names.USER_PROFILE, names.USER_ACTIVITY]
    )
    users = [0, 1, PROFILE_ONLY, UNKNOWN[0]]
    want = {u: parse_row(u, row) for u, row in _feast_rows(layout, users).items()}

    async def main() -> dict[int, Any]:
        reader = FeastFeatureReader.open(layout=layout, dataset=DATASET, socket_timeout_s=0.5)
        assert reader.direct is None and not reader.is_async
        await reader.start()
        try:
            return {u: await reader.read(u, timeout_s=5.0) for u in users}
        finally:
            await reader.close()

    assert uvloop.run(main()) == want
    assert want[UNKNOWN[0]] is None and want[0] is not None


def test_the_read_deadline_does_not_count_the_loops_backlog() -> None:
    """A check that runs late (the loop was busy) extends the deadline once by its lateness; a
    punctual one expires it. No tight wall clock is asserted: a 30 ms block is always > 2 ms
    late, and a punctual check is never 15 ms late."""
    import time

    from cascade.runtime.feast_redis import LagAwareDeadline

    async def run(block_s: float) -> tuple[float, bool]:
        loop = asyncio.get_running_loop()
        deadline = asyncio.timeout(None)
        watchdog = LagAwareDeadline(deadline, 0.010)
        expired = False
        try:
            async with deadline:
                watchdog.start()
                if block_s:
                    loop.call_soon(time.sleep, block_s)  # the backlog: other requests' work
                await asyncio.sleep(1.0)  # a read that never answers
        except TimeoutError:
            expired = deadline.expired()
        finally:
            watchdog.cancel()
        return watchdog.extended_by, expired

    extended, expired = asyncio.run(run(0.0))
    # On time: the timeout, or a few ms more when a loaded machine ran the check late (a CI run
    # once saw 3.3 ms): never anything like the 30 ms backlog below.
    assert expired and extended < 0.015, extended
    extended, expired = asyncio.run(run(0.030))
    assert extended > LagAwareDeadline.GRACE_S and expired  # late: one extension, then expiry
