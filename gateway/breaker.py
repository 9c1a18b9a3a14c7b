"""A latency-aware circuit breaker: pybreaker's state machine driven by a sliding-window policy.

pybreaker 1.4.1 keeps the state (closed / open / half-open, optionally shared across replicas in
Redis through ``CircuitRedisStorage``) and notifies listeners on every transition. It cannot wrap
``async def`` functions, counts only consecutive failures, has no slow-call detection and lets
every call through when half-open. So this module decides *when* to move between states, like
Resilience4j's count-based breaker, and tells pybreaker through ``open()``, ``half_open()`` and
``close()``:

- closed: the outcome of the last ``window_size`` calls is kept. Once at least
  ``minimum_calls`` are recorded, the breaker opens when the failure rate or the slow-call rate
  (calls that took longer than ``slow_call_seconds``) reaches ``failure_rate_threshold``.
  It also opens after ``consecutive_failures`` failures in a row, whatever the window says:
  pybreaker's own rule (``fail_max``), which catches a primary that is hard down (killed,
  refusing connections) in a few calls instead of half a window.
- open: every call is rejected for ``wait_seconds``; the first call after that moves it to
  half-open.
- half-open: at most ``half_open_calls`` trial calls are let through (others are rejected). It
  closes when all of them succeed in time and re-opens as soon as one fails or is slow.

Time comes from an injected clock (``Callable[[], float]``, seconds), so tests drive the state
machine with explicit durations and no sleeps. Usage from asyncio::

    async with breaker.guard() as permit:   # raises BreakerOpenError when rejected
        result = await call_primary()
    # success / failure / duration recorded on exit (an exception = a failure)

or, when the caller measures the call itself: ``permit = breaker.try_acquire()`` then
``breaker.record(permit, duration=..., ok=...)``.

With Redis-shared storage, the *state* is shared (one replica opening it opens it for all); the
sliding windows stay per replica. The shared state is re-read at most every
``shared_sync_seconds`` so the request path does not make a Redis round trip per call.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pybreaker

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

CLOSED = pybreaker.STATE_CLOSED  # "closed"
OPEN = pybreaker.STATE_OPEN  # "open"
HALF_OPEN = pybreaker.STATE_HALF_OPEN  # "half-open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the metrics gauge's encoding


class BreakerOpenError(Exception):
    """The breaker rejected the call (open, or half-open with all trial slots taken)."""


@dataclass(frozen=True)
class BreakerConfig:
    """The sliding-window policy. Defaults follow Resilience4j's spirit, tuned for a 100 ms SLO."""

    window_size: int = 100
    minimum_calls: int = 50
    failure_rate_threshold: float = 0.5  # fraction in (0, 1]
    slow_call_seconds: float = 0.100
    wait_seconds: float = 5.0
    half_open_calls: int = 2
    consecutive_failures: int = 20  # 0 turns the rule off

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError("window_size must be >= 1")
        if not 1 <= self.minimum_calls <= self.window_size:
            raise ValueError("minimum_calls must be in [1, window_size]")
        if not 0.0 < self.failure_rate_threshold <= 1.0:
            raise ValueError("failure_rate_threshold must be in (0, 1]")
        if self.slow_call_seconds <= 0 or self.wait_seconds < 0:
            raise ValueError("slow_call_seconds must be > 0 and wait_seconds >= 0")
        if self.half_open_calls < 1:
            raise ValueError("half_open_calls must be >= 1")
        if self.consecutive_failures < 0:
            raise ValueError("consecutive_failures must be >= 0 (0 turns it off)")


@dataclass
class Permit:
    """Leave to make one call; ``record`` or ``release`` it exactly once."""

    generation: int  # the breaker episode it was issued in; stale results are ignored
    trial: bool  # a half-open trial call
    started: float
    done: bool = False


class _TransitionLog(pybreaker.CircuitBreakerListener):
    """Logs every state change pybreaker reports, and forwards it to the observers."""

    def __init__(self, observers: Sequence[Callable[[str, str, str], None]]) -> None:
        self.observers = list(observers)

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = old_state.name if old_state is not None else "none"
        logger.warning("breaker %s: %s -> %s", cb.name, old, new_state.name)
        for observe in self.observers:
            observe(str(cb.name), old, new_state.name)


def redis_storage(
    *, url: str, namespace: str, timeout_seconds: float = 0.05
) -> pybreaker.CircuitRedisStorage:
    """pybreaker's Redis storage with short timeouts (redis-py waits seconds by default).

    When Redis does not answer, pybreaker falls back to the closed state for reads.
    """
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
    )
    return _TolerantRedisStorage(CLOSED, client, namespace=namespace)


class _TolerantRedisStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's storage, minus its one unguarded Redis call (the keys' setup at construction).

    Every other method already catches ``RedisError`` (a reset connection included: the sync
    client turns socket errors into ``redis.ConnectionError``) and falls back to closed.
    """

    def _initialize_redis_state(self, state: str) -> None:
        from redis.exceptions import RedisError

        try:
            super()._initialize_redis_state(state)
        except RedisError as exc:
            logger.warning("breaker storage: Redis unavailable at start (%r); state %s", exc, state)


class SlidingWindowBreaker:
    """See the module docstring. Not thread-safe by design: one event loop drives it."""

    def __init__(
        self,
        *,
        name: str = "primary",
        config: BreakerConfig | None = None,
        clock: Clock = time.monotonic,
        storage: pybreaker.CircuitBreakerStorage | None = None,
        on_transition: Sequence[Callable[[str, str, str], None]] = (),
        shared_sync_seconds: float = 0.5,
        shared: bool | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._listener = _TransitionLog(on_transition)
        # fail_max / reset_timeout are unused: this class decides the transitions.
        self.cb = pybreaker.CircuitBreaker(
            name=name, state_storage=storage, listeners=[self._listener], fail_max=1 << 30
        )
        if shared is None:  # memory storage is private to this process; anything else is shared
            shared = storage is not None and not isinstance(storage, pybreaker.CircuitMemoryStorage)
        self._shared = shared
        self._shared_sync_seconds = shared_sync_seconds
        self._last_sync = float("-inf")
        self._state: str = self.cb.current_state
        self._window: deque[tuple[bool, bool]] = deque(maxlen=self.config.window_size)
        self._failed = 0
        self._slow = 0
        self._failed_in_a_row = 0
        self._generation = 0
        self._opened_at = clock() if self._state == OPEN else 0.0
        self._trials_issued = 0
        self._trials_in_flight = 0
        self._trials_ok = 0

    # -- observation -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.cb.name)

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (the wait period is applied lazily on acquire)."""
        self._sync_shared()
        return self._state

    def rates(self) -> tuple[float, float, int]:
        """(failure rate, slow-call rate, calls in window) of the closed-state window."""
        n = len(self._window)
        if n == 0:
            return 0.0, 0.0, 0
        return self._failed / n, self._slow / n, n

    def add_observer(self, observe: Callable[[str, str, str], None]) -> None:
        """Call ``observe(name, old_state, new_state)`` on each transition (metrics use it)."""
        self._listener.observers.append(observe)

    # -- the call protocol -------------------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """A permit for one call, or None when the breaker rejects it."""
        self._sync_shared()
        now = self._clock()
        if self._state == OPEN:
            if now - self._opened_at < self.config.wait_seconds:
                return None
            self._transition(HALF_OPEN)
        if self._state == HALF_OPEN:
            if self._trials_issued >= self.config.half_open_calls:
                return None
            self._trials_issued += 1
            self._trials_in_flight += 1
            return Permit(generation=self._generation, trial=True, started=now)
        return Permit(generation=self._generation, trial=False, started=now)

    def release(self, permit: Permit) -> None:
        """Give a permit back without an outcome (the caller gave up, e.g. cancelled)."""
        if permit.done:
            return
        permit.done = True
        if permit.trial and permit.generation == self._generation:
            self._trials_in_flight -= 1
            self._trials_issued -= 1  # the slot can be used by another trial

    def record(self, permit: Permit, *, duration: float, ok: bool) -> None:
        """Record the outcome of the call made with ``permit`` (duration in seconds)."""
        if permit.done:
            return
        permit.done = True
        if permit.generation != self._generation:
            return  # started before the last transition: says nothing about the current state
        slow = duration > self.config.slow_call_seconds
        if permit.trial:
            self._trials_in_flight -= 1
            if not ok or slow:
                self._transition(OPEN)
                return
            self._trials_ok += 1
            if self._trials_ok >= self.config.half_open_calls:
                self._transition(CLOSED)
            return
        if self._state != CLOSED:
            return
        if len(self._window) == self._window.maxlen:
            old_failed, old_slow = self._window[0]
            self._failed -= old_failed
            self._slow -= old_slow
        self._window.append((not ok, slow))
        self._failed += not ok
        self._slow += slow
        self._failed_in_a_row = 0 if ok else self._failed_in_a_row + 1
        in_a_row = self.config.consecutive_failures
        if in_a_row and self._failed_in_a_row >= in_a_row:
            logger.warning("breaker %s: %d failures in a row", self.name, self._failed_in_a_row)
            self._transition(OPEN)
            return
        n = len(self._window)
        if n >= self.config.minimum_calls:
            threshold = self.config.failure_rate_threshold
            if self._failed / n >= threshold or self._slow / n >= threshold:
                logger.warning(
                    "breaker %s: failure rate %.2f, slow-call rate %.2f over %d calls",
                    self.name,
                    self._failed / n,
                    self._slow / n,
                    n,
                )
                self._transition(OPEN)

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[Permit]:
        """Acquire, run the block, record its duration and outcome; raise BreakerOpenError if rejected.

        An exception in the block is a failure; ``asyncio.CancelledError`` releases the permit
        without an outcome, because the caller, not the upstream, gave up.
        """
        permit = self.try_acquire()
        if permit is None:
            raise BreakerOpenError(f"breaker {self.name} is {self._state}")
        try:
            yield permit
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.record(permit, duration=self._clock() - permit.started, ok=False)
            else:
                self.release(permit)
            raise
        self.record(permit, duration=self._clock() - permit.started, ok=True)

    # -- manual control (drills, tests) ------------------------------------------------------

    def force_open(self) -> None:
        """Open now (the wait period starts now)."""
        self._transition(OPEN)

    def reset(self) -> None:
        """Close now, with an empty window."""
        self._transition(CLOSED)

    # -- internals ---------------------------------------------------------------------------

    def _transition(self, new_state: str) -> None:
        self._generation += 1
        self._window.clear()
        self._failed = self._slow = self._failed_in_a_row = 0
        self._trials_issued = self._trials_in_flight = self._trials_ok = 0
        if new_state == OPEN:
            self._opened_at = self._clock()
        self._state = new_state
        # pybreaker stores the state (memory or Redis) and notifies the listeners.
        if new_state == OPEN:
            self.cb.open()
        elif new_state == HALF_OPEN:
            self.cb.half_open()
        else:
            self.cb.close()

    def _sync_shared(self) -> None:
        """Adopt a state another replica wrote to the shared storage (rate-limited)."""
        if not self._shared:
            return
        now = self._clock()
        if now - self._last_sync < self._shared_sync_seconds:
            return
        self._last_sync = now
        shared = self.cb.current_state
        if shared == self._state:
            return
        if shared == OPEN and self._state == CLOSED:
            # Opened elsewhere: the wait period starts when this replica notices it.
            self._generation += 1
            self._window.clear()
            self._failed = self._slow = self._failed_in_a_row = 0
            self._opened_at = now
            self._state = OPEN
            _ = self.cb.state  # pybreaker refreshes its cached state and notifies listeners
        elif shared == CLOSED and self._state in (OPEN, HALF_OPEN):
            self._generation += 1
            self._trials_issued = self._trials_in_flight = self._trials_ok = 0
            self._state = CLOSED
            _ = self.cb.state
