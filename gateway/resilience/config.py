"""The breaker's policy, validated once at construction so the request path never checks it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BreakerConfig:
    """The count-based sliding-window policy, tuned for a 100 ms SLO.

    The failure-rate and slow-call-rate thresholds are separate (as in Resilience4j): a primary
    that answers correctly but late is a different fault from one that errors, and may deserve a
    different tolerance.
    """

    window_size: int = 100
    minimum_calls: int = 50
    failure_rate_threshold: float = 0.5  # fraction in (0, 1]
    slow_call_rate_threshold: float = 0.5  # fraction in (0, 1]
    slow_call_seconds: float = 0.100
    wait_seconds: float = 5.0  # float("inf") holds it open (drills)
    half_open_calls: int = 2
    consecutive_failures: int = 20  # 0 turns the rule off

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError("window_size must be >= 1")
        if not 1 <= self.minimum_calls <= self.window_size:
            raise ValueError("minimum_calls must be in [1, window_size]")
        if not 0.0 < self.failure_rate_threshold <= 1.0:
            raise ValueError("failure_rate_threshold must be in (0, 1]")
        if not 0.0 < self.slow_call_rate_threshold <= 1.0:
            raise ValueError("slow_call_rate_threshold must be in (0, 1]")
        if self.slow_call_seconds <= 0 or self.wait_seconds < 0:
            raise ValueError("slow_call_seconds must be > 0 and wait_seconds >= 0")
        if self.half_open_calls < 1:
            raise ValueError("half_open_calls must be >= 1")
        if self.consecutive_failures < 0:
            raise ValueError("consecutive_failures must be >= 0 (0 turns it off)")
