"""Where the breaker's state lives: this process only, or Redis, shared by every replica.

The interface is two calls: ``read`` (``None`` when the state cannot be known right now: the
breaker then keeps its local state) and ``write`` (best effort, never raises). Only the *state*
is shared; each replica keeps its own sliding window, and the breaker re-reads the shared state
at most every ``shared_sync_seconds``, so the request path does not pay a Redis round trip per
call.

Why no pybreaker: it was kept only for its listeners and its ``CircuitRedisStorage``, with its own
state machine disabled. That storage writes three more keys on every transition (counters and an
``opened_at`` transaction) that nothing here reads, needed a subclass to survive Redis being down
at construction, logs a traceback for every failed Redis call, and answers "closed" when Redis is
unreachable, which would close a breaker that another replica (or this one) opened. One GET and one
SET through redis-py do the job. The key and its values are pybreaker's (``<namespace>:pybreaker:
state``, holding ``closed`` / ``open`` / ``half-open``), so replicas of the old and new code share
the state during a rolling upgrade.
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from gateway.resilience.states import BreakerState

logger = logging.getLogger(__name__)


class StateStorage(Protocol):
    """The breaker's shared state. Implementations must never raise into the request path."""

    def read(self) -> BreakerState | None:
        """The stored state, or None when it cannot be read (keep the local state)."""
        ...

    def write(self, state: BreakerState) -> None:
        """Store ``state``; a failure is logged, not raised."""
        ...


class InMemoryStorage:
    """State held in this object: private to one breaker, or shared by breakers in one process."""

    def __init__(self, state: BreakerState = BreakerState.CLOSED) -> None:
        self._state = state

    def read(self) -> BreakerState | None:
        return self._state

    def write(self, state: BreakerState) -> None:
        self._state = state


class RedisStorage:
    """State in one Redis key. A missing key reads as closed (no replica has opened it).

    Redis being unreachable (at start or later) is logged once when it starts and once when it
    ends, not per call: the breaker syncs every ``shared_sync_seconds`` on the event loop. A write
    Redis missed is retried before the next read, so a state entered during an outage is not
    undone by the older one Redis still holds when it comes back.
    """

    def __init__(self, client: redis.Redis, *, namespace: str) -> None:
        self._client = client
        self.key = f"{namespace}:pybreaker:state"
        self._failing = False
        self._unwritten: BreakerState | None = None  # the last write Redis missed
        self._bad_value: object = None  # the unknown value last logged (logged once, not per sync)

    def read(self) -> BreakerState | None:
        if self._unwritten is not None:  # publish it first: Redis holds an older state
            self.write(self._unwritten)
            if self._unwritten is not None:
                return None
        try:
            raw = self._client.get(self.key)
        except (RedisError, OSError) as exc:
            self._failed("read", exc)
            return None
        self._recovered()
        if raw is None:
            return BreakerState.CLOSED
        try:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            return BreakerState(text)
        except ValueError:
            if raw != self._bad_value:
                logger.warning("breaker storage: unknown state %r in %s; ignored", raw, self.key)
            self._bad_value = raw
            return None

    def write(self, state: BreakerState) -> None:
        try:
            self._client.set(self.key, state.value)
        except (RedisError, OSError) as exc:
            self._unwritten = state
            self._failed("write", exc)
            return
        self._unwritten = None
        self._recovered()

    def close(self) -> None:
        """Close the client's connections (an unclosed client is a ResourceWarning)."""
        self._client.close()

    def _failed(self, what: str, exc: BaseException) -> None:
        if not self._failing:
            logger.warning(
                "breaker storage: Redis unavailable (%s %s: %r); keeping the local state",
                what,
                self.key,
                exc,
            )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            logger.warning("breaker storage: Redis reachable again (%s)", self.key)
        self._failing = False


def redis_storage(*, url: str, namespace: str, timeout_seconds: float = 0.05) -> RedisStorage:
    """Redis storage with short timeouts and no retries: the breaker is read on the request path.

    Nothing is sent until the first read, so an unreachable Redis cannot fail this call.
    """
    client = redis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )
    return RedisStorage(client, namespace=namespace)
