"""Per-client token buckets, shared across replicas through Redis, per-process when Redis is down.

Each client key has a bucket of ``burst`` tokens refilled at ``rate`` tokens per second; a request
takes one token or is refused with the time until one is available (``Retry-After``).

Shared: one Lua script (loaded once, called with ``EVALSHA``) refills and takes atomically on the
Redis server, timed by Redis' own clock (``TIME``), so replicas with skewed clocks agree. The
asyncio client has socket timeouts in the tens of milliseconds.

Fallback: when Redis errors or times out, the decision comes from a bucket in this process, and
Redis is not tried again for ``retry_redis_s`` (a dead Redis costs one timeout per second, not
one per request). While in fallback each replica enforces its share of the key's bucket:
``rate / replicas`` and ``burst / replicas`` (at least one token), ``replicas`` being
``GATEWAY_RATE_LIMIT_REPLICAS`` (set it to the HPA's maximum, or the usual count: a client
spread over fewer replicas than that gets less than its rate, never more, while Redis is down).
So a dead Redis no longer multiplies a client's limit by the replica count (issue 20, item 5);
``gateway_ratelimit_redis_errors_total`` and the alert ``CascadeRateLimitRedisErrors`` say when
it happens. A limiter failure never fails the request: a connection Redis (or a
proxy in front of it) accepts then resets surfaces as ``RedisError`` or, from uvloop, as
``RuntimeError`` on the closed transport; both fall back.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import NoScriptError, RedisError

logger = logging.getLogger(__name__)

Backend = Literal["redis", "local"]

# KEYS[1] bucket hash; ARGV rate (tokens/s), burst, cost. Returns {allowed, retry_after_s, tokens}
# with the floats as strings (Lua numbers in replies are truncated to integers).
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, string.format('%.6f', retry), string.format('%.6f', tokens)}
"""


@dataclass(frozen=True)
class Decision:
    """The limiter's answer for one request."""

    allowed: bool
    retry_after_s: float
    remaining: float
    backend: Backend

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1 (``Retry-After`` has no fractions)."""
        return str(max(1, math.ceil(self.retry_after_s)))


class LocalBuckets:
    """In-process token buckets (the fallback), at most ``max_keys`` of them (least recent dropped)."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, *, rate: float, burst: int, cost: float = 1.0) -> Decision:
        now = self.clock()
        tokens, ts = self._buckets.pop(key, (float(burst), now))
        tokens = min(float(burst), tokens + max(0.0, now - ts) * rate)
        allowed = tokens >= cost
        retry = 0.0
        if allowed:
            tokens -= cost
        else:
            retry = (cost - tokens) / rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return Decision(allowed=allowed, retry_after_s=retry, remaining=tokens, backend="local")


class RateLimiter:
    """Token buckets keyed by client key id; Redis-shared when ``redis`` is given."""

    def __init__(
        self,
        *,
        redis: Any | None = None,
        prefix: str = "cascade:ratelimit:",
        retry_redis_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_redis_error: Callable[[BaseException], None] | None = None,
        replicas: int = 1,
    ) -> None:
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.replicas = replicas
        self.redis = redis
        self.prefix = prefix
        self.retry_redis_s = retry_redis_s
        self.clock = clock
        self.local = LocalBuckets(clock=clock)
        self.on_redis_error = on_redis_error
        self._sha: str | None = None
        self._redis_down_until = 0.0

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.02, **kwargs: Any) -> RateLimiter:
        """A limiter on the Redis at ``url`` with socket and connect timeouts of ``timeout_s``
        (20 ms: a slow Redis must not slow the request path; it falls back to local buckets)."""
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        return cls(redis=client, **kwargs)

    @property
    def redis_healthy(self) -> bool:
        return self.redis is not None and self.clock() >= self._redis_down_until

    async def check(self, key: str, *, rate: float, burst: int, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens (one per request; a batch's further users cost one each) from
        ``key``'s bucket; never raises for a Redis failure."""
        if self.redis is not None and self.clock() >= self._redis_down_until:
            try:
                return await self._redis_take(key, rate=rate, burst=burst, cost=cost)
            except (
                RedisError,
                OSError,
                TimeoutError,
                ValueError,
                RuntimeError,  # uvloop: an operation on a transport the peer reset
                EOFError,
            ) as exc:  # store failure: fall back
                self._redis_down_until = self.clock() + self.retry_redis_s
                logger.warning(
                    "rate limiter: Redis failed (%r); per-process buckets for %.1fs",
                    exc,
                    self.retry_redis_s,
                )
                if self.on_redis_error is not None:
                    self.on_redis_error(exc)
        if self.redis is None or self.replicas == 1:  # per process by design, or one replica
            return self.local.take(key, rate=rate, burst=burst, cost=cost)
        # Redis down: this replica's share of the bucket, so all of them together stay within it
        return self.local.take(
            key, rate=rate / self.replicas, burst=max(1, burst // self.replicas), cost=cost
        )

    async def _redis_take(
        self, key: str, *, rate: float, burst: int, cost: float = 1.0
    ) -> Decision:
        redis = self.redis
        assert redis is not None
        args = (self.prefix + key, repr(float(rate)), str(int(burst)), repr(float(cost)))
        if self._sha is None:
            self._sha = await redis.script_load(TOKEN_BUCKET_LUA)
        try:
            reply = await redis.evalsha(self._sha, 1, *args)
        except NoScriptError:  # Redis restarted (script cache empty): load it again
            self._sha = await redis.script_load(TOKEN_BUCKET_LUA)
            reply = await redis.evalsha(self._sha, 1, *args)
        allowed, retry, tokens = reply
        return Decision(
            allowed=int(allowed) == 1,
            retry_after_s=float(retry),
            remaining=float(tokens),
            backend="redis",
        )

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
