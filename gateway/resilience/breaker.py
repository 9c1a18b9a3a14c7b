"""A latency-aware circuit breaker, in the shape of Resilience4j's count-based one.

The pieces: ``BreakerConfig`` (the policy), ``CountWindow`` (the closed state's sliding window and
its verdicts), one class per state (``states``), and a ``StateStorage`` that holds the state for
this process or, in Redis, for every replica. This class ties them together and is the only thing
the request path talks to, through one protocol::

    permit = breaker.try_acquire()          # None: rejected (open, or no half-open slot left)
    ...make the call, measuring its duration on the same clock...
    breaker.record(permit, duration=elapsed, ok=succeeded)   # or, with no verdict:
    breaker.release(permit)                 # the caller gave up (cancelled, own deadline)

A call is slow when it took longer than ``slow_call_seconds``; a slow call counts towards the
slow-call rate even when it succeeded. Time comes from an injected clock (seconds), so tests drive
the machine with explicit durations and no sleeps. Not thread-safe by design: one event loop
drives it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from gateway.resilience.config import BreakerConfig
from gateway.resilience.states import ADOPTED, BreakerState, Permit, State, enter
from gateway.resilience.storage import InMemoryStorage, StateStorage, redis_storage

__all__ = [
    "STATE_VALUES",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "Permit",
    "StateStorage",
    "TransitionObserver",
    "redis_storage",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
TransitionObserver = Callable[[str, str, str], None]  # (breaker name, old state, new state)

STATE_VALUES = {"closed": 0, "half-open": 1, "open": 2}  # the metrics gauge's encoding


class CircuitBreaker:
    """See the module docstring."""

    def __init__(
        self,
        *,
        name: str = "primary",
        config: BreakerConfig | None = None,
        clock: Clock = time.monotonic,
        storage: StateStorage | None = None,
        on_transition: Sequence[TransitionObserver] = (),
        shared_sync_seconds: float = 0.5,
    ) -> None:
        self._name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._storage: StateStorage = InMemoryStorage() if storage is None else storage
        self._observers = list(on_transition)
        self._shared_sync_seconds = shared_sync_seconds
        self._last_sync = float("-inf")
        self._generation = 0
        initial = self._storage.read() or BreakerState.CLOSED  # another replica may have opened it
        self._state: State = enter(initial, self.config, generation=0, now=clock())

    # -- observation -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (the wait period is applied lazily on acquire)."""
        self._sync_shared()
        return self._state.kind.value

    def rates(self) -> tuple[float, float, int]:
        """(failure rate, slow-call rate, calls in window) of the closed-state window."""
        s = self._state.snapshot()
        return s.failure_rate, s.slow_call_rate, s.calls

    # -- the call protocol -------------------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """A permit for one call, or None when the breaker rejects it."""
        self._sync_shared()
        return self._state.try_acquire(self, self._clock())

    def record(self, permit: Permit, *, duration: float, ok: bool) -> None:
        """Record the outcome of the call made with ``permit`` (duration in seconds)."""
        if permit.done:
            return
        permit.done = True
        if permit.generation != self._state.generation:
            return  # started before the last transition: says nothing about the current state
        slow = duration > self.config.slow_call_seconds
        self._state.on_result(self, permit, failed=not ok, slow=slow)

    def release(self, permit: Permit) -> None:
        """Give a permit back without an outcome (the caller gave up, e.g. cancelled)."""
        if permit.done:
            return
        permit.done = True
        if permit.generation == self._state.generation:
            self._state.on_release(permit)

    # -- manual control (drills, tests) ------------------------------------------------------

    def force_open(self) -> None:
        """Open now (the wait period starts now, even when it was already open)."""
        self.transition_to(BreakerState.OPEN)

    def reset(self) -> None:
        """Close now, with an empty window."""
        self.transition_to(BreakerState.CLOSED)

    # -- transitions -------------------------------------------------------------------------

    def transition_to(self, target: BreakerState, why: str = "") -> State:
        """Enter ``target`` here and in the storage (the states call this; so do the controls)."""
        if why:
            logger.warning("breaker %s: %s", self._name, why)
        state = self._enter(target)
        self._storage.write(target)
        return state

    def _enter(self, target: BreakerState) -> State:
        """Replace the state object (dropping its counters), log and tell the observers."""
        old = self._state.kind
        self._generation += 1
        self._state = enter(target, self.config, generation=self._generation, now=self._clock())
        logger.warning("breaker %s: %s -> %s", self._name, old.value, target.value)
        for observe in self._observers:
            observe(self._name, old.value, target.value)
        return self._state

    def _sync_shared(self) -> None:
        """Adopt a state another replica wrote to the storage (at most every sync period)."""
        now = self._clock()
        if now - self._last_sync < self._shared_sync_seconds:
            return
        self._last_sync = now
        shared = self._storage.read()
        if shared is not None and (self._state.kind, shared) in ADOPTED:
            self._enter(shared)  # not written back: it came from the storage
