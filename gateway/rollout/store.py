"""The rollout state in Redis, shared by every gateway replica and the CLI.

Keys (``prefix`` default ``cascade:rollout``)::

    <prefix>:state                      JSON of RolloutState; its "rev" is the CAS revision
    <prefix>:history                    list of Transition JSON, oldest first (last 1,000 kept)
    <prefix>:counts:<rollout>:<step>:<arm>   hash of per-step counters (replicas HINCRBY them)
    <prefix>:ctrbase:<rollout>:<step>   hash: the feedback counters when the step began
    <prefix>:lock                       the controller lock (SET NX PX, owner-checked renewal)
    <prefix>:verdict                    JSON of the controller's last analysis (for status)

A write is a compare-and-set in one Lua script: the state is replaced only if its stored ``rev``
is the one the writer read, and the transition is appended to the history in the same script, so
two writers (two replicas' controllers, or the CLI racing a controller) can never both move the
state, nor log a transition that did not happen. Every transition is also logged here.

Redis being down: :class:`StoreUnavailable` (the CLI prints it, the controller skips a look);
:class:`StateCache` keeps the last state it read and says so (``stale``) for the metric.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from cascade.runtime.redact import redact
from gateway.rollout.state import Phase, RolloutState, Transition

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "cascade:rollout"
HISTORY_KEEP = 1000
COUNTS_TTL_S = 7 * 86_400  # a week: enough to audit a rollout, bounded memory

# KEYS: state, history. ARGV: expected rev, new JSON (rev already bumped), transition JSON, keep.
_CAS = """
local raw = redis.call('GET', KEYS[1])
local rev = 0
if raw then rev = cjson.decode(raw)['rev'] or 0 end
if tonumber(rev) ~= tonumber(ARGV[1]) then return {0, rev} end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
return {1, rev}
"""
# KEYS: lock. ARGV: owner, ttl ms. Take it if free, renew it if ours.
_LOCK = """
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
"""


class StoreUnavailable(RuntimeError):
    """Redis could not be reached or answered an error (the message has no credentials)."""


class Conflict(RuntimeError):
    """Someone else changed the state since it was read (compare-and-set lost)."""


def connect(url: str, *, timeout_s: float = 0.5) -> aioredis.Redis:
    """An asyncio client with short timeouts and no retries (callers retry on their schedule)."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _unavailable(what: str, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"rollout store: Redis unavailable during {what}: {redact(str(exc))}")


class RolloutStore:
    """See the module docstring. Every method raises :class:`StoreUnavailable` on Redis errors."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self.state_key = f"{prefix}:state"
        self.history_key = f"{prefix}:history"
        self.lock_key = f"{prefix}:lock"

    async def close(self) -> None:
        await self.client.aclose()

    async def load(self) -> RolloutState:
        """The stored state; a fresh ``RolloutState()`` when none was ever written."""
        try:
            raw = await self.client.get(self.state_key)
        except (RedisError, OSError) as exc:
            raise _unavailable("load", exc) from exc
        if raw is None:
            return RolloutState()
        try:
            return RolloutState.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreUnavailable(
                f"rollout store: {self.state_key} is not a state: {exc!r}"
            ) from exc

    async def write(
        self, new: RolloutState, transition: Transition, *, expected_rev: int
    ) -> RolloutState:
        """Store ``new`` (its rev becomes ``expected_rev + 1``) and append ``transition``, only if
        the stored rev is still ``expected_rev``; else :class:`Conflict`."""
        stored = RolloutState.from_json({**new.to_json(), "rev": expected_rev + 1})
        try:
            ok, rev = await self.client.eval(  # type: ignore[misc]
                _CAS,
                2,
                self.state_key,
                self.history_key,
                expected_rev,
                json.dumps(stored.to_json()),
                json.dumps(transition.to_json()),
                HISTORY_KEEP,
            )
        except (RedisError, OSError) as exc:
            raise _unavailable("write", exc) from exc
        if not ok:
            raise Conflict(f"rollout state changed (rev {rev}, expected {expected_rev}): retry")
        # A rollback is what an operator must see; every other move is routine.
        level = logging.WARNING if transition.to_phase is Phase.ROLLED_BACK else logging.INFO
        logger.log(level, "rollout %s", transition.describe())
        return stored

    async def apply(
        self, move: Callable[[RolloutState], tuple[RolloutState, Transition]]
    ) -> tuple[RolloutState, Transition]:
        """Load, apply ``move`` (a pure transition; it may raise IllegalTransition), write with
        CAS. One retry on a conflict, re-reading the state the other writer left."""
        for attempt in range(2):
            current = await self.load()
            new, transition = move(current)
            try:
                return await self.write(new, transition, expected_rev=current.rev), transition
            except Conflict:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last ``limit`` transitions, oldest first."""
        try:
            raws = await self.client.lrange(self.history_key, -limit, -1)  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise _unavailable("history", exc) from exc
        return [json.loads(r) for r in raws]

    # -- per-step counters -----------------------------------------------------------------

    def counts_key(self, rollout_id: str, step: int, arm: str) -> str:
        return f"{self.prefix}:counts:{rollout_id}:{step}:{arm}"

    async def add_counts(
        self, rollout_id: str, step: int, counts: Mapping[str, Mapping[str, int]]
    ) -> None:
        """Add ``{arm: {field: n}}`` to the step's counters (one round trip)."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for arm, fields in counts.items():
                    key = self.counts_key(rollout_id, step, arm)
                    for name, n in fields.items():
                        if n:
                            pipe.hincrby(key, name, n)
                    pipe.expire(key, COUNTS_TTL_S)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable("add_counts", exc) from exc

    async def read_counts(self, rollout_id: str, step: int, arm: str) -> dict[str, int]:
        try:
            raw = await self.client.hgetall(self.counts_key(rollout_id, step, arm))  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise _unavailable("read_counts", exc) from exc
        return {k.decode() if isinstance(k, bytes) else str(k): int(v) for k, v in raw.items()}

    async def ctr_baseline(
        self, rollout_id: str, step: int, current: Mapping[str, int]
    ) -> dict[str, int]:
        """The feedback counters as they were when the step's first look read them: the first
        caller stores ``current`` (HSETNX per field), later callers get what it stored."""
        key = f"{self.prefix}:ctrbase:{rollout_id}:{step}"
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for name, n in current.items():
                    pipe.hsetnx(key, name, str(n))
                pipe.expire(key, COUNTS_TTL_S)
                pipe.hgetall(key)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable("ctr_baseline", exc) from exc
        raw = results[-1]
        return {k.decode() if isinstance(k, bytes) else str(k): int(v) for k, v in raw.items()}

    async def save_verdict(self, verdict: Mapping[str, Any]) -> None:
        try:
            await self.client.set(f"{self.prefix}:verdict", json.dumps(verdict), ex=COUNTS_TTL_S)
        except (RedisError, OSError) as exc:
            raise _unavailable("save_verdict", exc) from exc

    async def load_verdict(self) -> dict[str, Any] | None:
        try:
            raw = await self.client.get(f"{self.prefix}:verdict")
        except (RedisError, OSError) as exc:
            raise _unavailable("load_verdict", exc) from exc
        return None if raw is None else dict(json.loads(raw))

    # -- the controller lock ---------------------------------------------------------------

    async def hold_lock(self, owner: str, *, ttl_s: float) -> bool:
        """Take the controller lock, or renew it if ``owner`` holds it; False if another does."""
        try:
            got = await self.client.eval(_LOCK, 1, self.lock_key, owner, int(ttl_s * 1000))  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise _unavailable("lock", exc) from exc
        return bool(got)


class StateCache:
    """The last state read, for the request path: refreshed off it (every ~1 s), never raising.

    When Redis is down the last known state stays in force (a canary keeps its users, a rolled
    back candidate stays out) and ``stale`` is True; the metric ``gateway_rollout_state_stale``
    shows it. Before the first successful read the state is the empty ``RolloutState()`` (no
    rollout: the gateway sends no version, as before rollouts existed).
    """

    def __init__(self, store: RolloutStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.state = RolloutState()
        self.stale = True
        self.loaded_at: float | None = None
        self._clock = clock
        self._listeners: list[Callable[[RolloutState, RolloutState], None]] = []

    def on_change(self, listener: Callable[[RolloutState, RolloutState], None]) -> None:
        """``listener(old, new)`` after the first successful read and each one that changed
        the rev."""
        self._listeners.append(listener)

    async def refresh(self) -> RolloutState:
        try:
            new = await self.store.load()
        except StoreUnavailable as exc:
            if not self.stale:
                logger.warning(
                    "%s; keeping the last known rollout state (%s)", exc, self.state.label()
                )
            self.stale = True
            return self.state
        if self.stale and self.loaded_at is not None:
            logger.warning("rollout store reachable again")
        first = self.loaded_at is None
        old, self.state, self.stale, self.loaded_at = self.state, new, False, self._clock()
        if first or new.rev != old.rev:
            for listener in self._listeners:
                listener(old, new)
        return new
