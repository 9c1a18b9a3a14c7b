"""Fixtures: a unique key prefix on the machine's Redis (its keys deleted afterwards), and a URL
whose port is closed (Redis unreachable). Tests drive the asyncio store with ``asyncio.run``
(the house has no pytest-asyncio), opening the client inside the loop that uses it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from cascade.runtime.procs import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture
def prefix() -> Iterator[str]:
    if not _redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    name = f"test:rollout:{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def dead_url() -> str:
    """Redis URL of a closed port, with a password that must never be printed."""
    return f"redis://:secretpw@127.0.0.1:{free_port()}/0"
