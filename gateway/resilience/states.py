"""The breaker's states: one small class per state, as Resilience4j's state machine has.

A transition replaces the state object with a fresh one, so everything a state counted (the
closed window, the half-open trial slots, the open period's start) is dropped with it, and every
state object carries the *generation* it was entered in: a permit from an older generation is
stale, and its result says nothing about the current state.

- closed: every call is let through; its outcome goes into the ``CountWindow``, which opens the
  breaker when its verdict says so.
- open: every call is rejected for ``wait_seconds``; the first call after that moves it to
  half-open, which decides on that call.
- half-open: at most ``half_open_calls`` trial calls are let through (others are rejected; a
  released trial frees its slot). It closes when all of them succeed in time and re-opens as soon
  as one fails or is slow.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Protocol

from gateway.resilience.config import BreakerConfig
from gateway.resilience.window import CountWindow, Snapshot, Verdict


class BreakerState(StrEnum):
    """The values are exported as they are (metrics labels, logs, /readyz)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


# (local, shared) pairs in which a replica adopts the state another replica wrote. Opened
# elsewhere: open here too (the wait starts when this replica notices). Closed elsewhere after its
# trials: close here too. A shared half-open is never adopted: each replica runs its own trials.
ADOPTED = frozenset(
    {
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.CLOSED),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    }
)


@dataclass
class Permit:
    """Leave to make one call; ``record`` or ``release`` it exactly once."""

    generation: int  # the state it was issued in; results from an older one are ignored
    trial: bool  # a half-open trial call
    started: float
    done: bool = False


class Machine(Protocol):
    """What a state needs from the breaker that holds it."""

    def transition_to(self, target: BreakerState, why: str = "") -> State: ...


class State:
    """The base: rejects every call and ignores every result."""

    kind: ClassVar[BreakerState]

    def __init__(self, config: BreakerConfig, *, generation: int, now: float) -> None:
        self.config = config
        self.generation = generation
        self.entered_at = now

    def try_acquire(self, machine: Machine, now: float) -> Permit | None:
        return None

    def on_result(self, machine: Machine, permit: Permit, *, failed: bool, slow: bool) -> None:
        """The outcome of a call made with a permit of this state's generation."""

    def on_release(self, permit: Permit) -> None:
        """A permit of this state's generation given back without an outcome."""

    def snapshot(self) -> Snapshot:
        return Snapshot(0, 0, 0, 0)


class Closed(State):
    kind = BreakerState.CLOSED

    def __init__(self, config: BreakerConfig, *, generation: int, now: float) -> None:
        super().__init__(config, generation=generation, now=now)
        self.window = CountWindow(config)

    def try_acquire(self, machine: Machine, now: float) -> Permit | None:
        return Permit(generation=self.generation, trial=False, started=now)

    def on_result(self, machine: Machine, permit: Permit, *, failed: bool, slow: bool) -> None:
        verdict = self.window.record(failed=failed, slow=slow)
        if verdict.opens:
            machine.transition_to(BreakerState.OPEN, why=_why(verdict, self.window.snapshot()))

    def snapshot(self) -> Snapshot:
        return self.window.snapshot()


class Open(State):
    kind = BreakerState.OPEN

    def try_acquire(self, machine: Machine, now: float) -> Permit | None:
        if now - self.entered_at < self.config.wait_seconds:
            return None
        return machine.transition_to(BreakerState.HALF_OPEN).try_acquire(machine, now)


class HalfOpen(State):
    kind = BreakerState.HALF_OPEN

    def __init__(self, config: BreakerConfig, *, generation: int, now: float) -> None:
        super().__init__(config, generation=generation, now=now)
        self.issued = 0  # trial slots taken (by calls in flight or finished)
        self.succeeded = 0

    def try_acquire(self, machine: Machine, now: float) -> Permit | None:
        if self.issued >= self.config.half_open_calls:
            return None
        self.issued += 1
        return Permit(generation=self.generation, trial=True, started=now)

    def on_result(self, machine: Machine, permit: Permit, *, failed: bool, slow: bool) -> None:
        if failed or slow:
            machine.transition_to(BreakerState.OPEN, why="a trial call failed or was slow")
            return
        self.succeeded += 1
        if self.succeeded >= self.config.half_open_calls:
            machine.transition_to(BreakerState.CLOSED)

    def on_release(self, permit: Permit) -> None:
        self.issued -= 1  # the slot can be used by another trial


STATES: dict[BreakerState, type[State]] = {
    BreakerState.CLOSED: Closed,
    BreakerState.OPEN: Open,
    BreakerState.HALF_OPEN: HalfOpen,
}


def enter(target: BreakerState, config: BreakerConfig, *, generation: int, now: float) -> State:
    """A fresh state object of kind ``target``."""
    return STATES[target](config, generation=generation, now=now)


def _why(verdict: Verdict, s: Snapshot) -> str:
    if verdict is Verdict.CONSECUTIVE_FAILURES:
        return f"{s.failed_in_a_row} failures in a row"
    return (
        f"failure rate {s.failure_rate:.2f}, slow-call rate {s.slow_call_rate:.2f} "
        f"over {s.calls} calls ({verdict.value})"
    )
