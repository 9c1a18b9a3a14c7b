"""``FeastFeatureReader.read_many`` (the batch route's one feature read): one pipelined round trip
for every distinct user on the direct Redis path, rows decoded like single reads, and a failure
or a timeout is ``FeaturesUnavailable`` for all of them. The real Redis path runs in
tests/integration/test_gateway_contract.py (the batch contract through the stack)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from gateway.tiers.features import FeastFeatureReader, FeaturesTimedOut, FeaturesUnavailable


class _Pipeline:
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> None:
        self.commands.append(args)

    async def execute(self) -> list[list[Any]]:
        self.client.round_trips += 1
        if self.client.mode == "fail":
            raise redis.ConnectionError("connection reset")
        if self.client.mode == "hang":
            await asyncio.sleep(5)
        return [self.client.rows.get(cmd[1], [None, None]) for cmd in self.commands]


class _Client:
    def __init__(self, rows: dict[bytes, list[Any]]) -> None:
        self.rows = rows
        self.mode = "ok"
        self.round_trips = 0

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        assert not transaction
        return _Pipeline(self)


class _Direct:
    """Stands in for ``FeastRedisReader``: keys, fields and a decoder of two features."""

    names = ("interaction_count", "seen_items")
    fields = (b"f1", b"f2")

    def __init__(self, client: _Client) -> None:
        self.client = client

    def key(self, entity_id: int) -> bytes:
        return b"user:%d" % entity_id

    def decode(self, raw: list[Any]) -> dict[str, Any]:
        return dict(zip(self.names, raw, strict=True))


class _Store:
    class config:  # the attribute path of Feast's config
        class online_store:
            type = "redis"


def _reader(mode: str = "ok") -> tuple[FeastFeatureReader, _Client]:
    client = _Client({b"user:1": [3, [10, 11]], b"user:2": [1, [12]]})
    client.mode = mode
    return FeastFeatureReader(_Store(), _Direct(client)), client  # type: ignore[arg-type]


def test_one_round_trip_for_every_distinct_user() -> None:
    reader, client = _reader()
    rows = asyncio.run(reader.read_many([1, 2, 1, 99], timeout_s=1))
    assert client.round_trips == 1
    assert set(rows) == {1, 2, 99}
    assert rows[1] is not None and rows[1].seen_items == (10, 11)
    assert rows[1].interaction_count == 3
    assert rows[99] is None  # the store does not know the user: cold start


@pytest.mark.parametrize(
    ("mode", "error"), [("fail", FeaturesUnavailable), ("hang", FeaturesTimedOut)]
)
def test_a_failure_or_a_timeout_is_unavailable_for_all(mode: str, error: type) -> None:
    reader, _ = _reader(mode)
    with pytest.raises(error):
        asyncio.run(reader.read_many([1, 2], timeout_s=0.05))
