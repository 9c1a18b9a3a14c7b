"""Count-based sliding-window metrics: the closed state's memory of the last N outcomes.

Like Resilience4j's ``FixedSizeSlidingWindowMetrics`` plus ``checkIfThresholdsExceeded``: every
``record`` returns a ``Verdict`` and the closed state opens the breaker when ``verdict.opens``.
Running totals are kept beside the ring of outcomes, so a record costs O(1) whatever the window.

Besides the rates, a run of ``consecutive_failures`` failures in a row opens it at once (0 turns
the rule off), before the window holds ``minimum_calls``: a primary that is hard down (killed,
refusing connections) is caught in a few calls instead of half a window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from gateway.resilience.config import BreakerConfig


class Verdict(Enum):
    """What the window says after a call; checked in this order of precedence."""

    CONSECUTIVE_FAILURES = "consecutive_failures"
    BELOW_MINIMUM_CALLS = "below_minimum_calls"
    FAILURE_RATE_ABOVE = "failure_rate_above"
    SLOW_CALL_RATE_ABOVE = "slow_call_rate_above"
    BELOW_THRESHOLDS = "below_thresholds"

    @property
    def opens(self) -> bool:
        """Whether this verdict moves a closed breaker to open."""
        return self in _OPENING


_OPENING = frozenset(
    {Verdict.CONSECUTIVE_FAILURES, Verdict.FAILURE_RATE_ABOVE, Verdict.SLOW_CALL_RATE_ABOVE}
)


@dataclass(frozen=True)
class Snapshot:
    """The window's totals at one moment."""

    calls: int
    failed: int
    slow: int
    failed_in_a_row: int

    @property
    def failure_rate(self) -> float:
        return self.failed / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        return self.slow / self.calls if self.calls else 0.0


class CountWindow:
    """The outcomes of the last ``config.window_size`` calls and the verdict they give."""

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self._outcomes: deque[tuple[bool, bool]] = deque(maxlen=config.window_size)
        self._failed = 0
        self._slow = 0
        self._failed_in_a_row = 0

    def record(self, *, failed: bool, slow: bool) -> Verdict:
        """Add one outcome (evicting the oldest when full) and judge the window."""
        if len(self._outcomes) == self._outcomes.maxlen:
            old_failed, old_slow = self._outcomes[0]
            self._failed -= old_failed
            self._slow -= old_slow
        self._outcomes.append((failed, slow))
        self._failed += failed
        self._slow += slow
        self._failed_in_a_row = self._failed_in_a_row + 1 if failed else 0
        return self.verdict()

    def verdict(self) -> Verdict:
        """Judge the window as it is (no call added)."""
        cfg = self.config
        if cfg.consecutive_failures and self._failed_in_a_row >= cfg.consecutive_failures:
            return Verdict.CONSECUTIVE_FAILURES
        n = len(self._outcomes)
        if n < cfg.minimum_calls:
            return Verdict.BELOW_MINIMUM_CALLS
        if self._failed / n >= cfg.failure_rate_threshold:
            return Verdict.FAILURE_RATE_ABOVE
        if self._slow / n >= cfg.slow_call_rate_threshold:
            return Verdict.SLOW_CALL_RATE_ABOVE
        return Verdict.BELOW_THRESHOLDS

    def snapshot(self) -> Snapshot:
        return Snapshot(len(self._outcomes), self._failed, self._slow, self._failed_in_a_row)
