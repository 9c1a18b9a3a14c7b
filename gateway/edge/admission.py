"""An adaptive in-flight limit: additive increase, multiplicative decrease on event-loop lag.

The gateway's scarce resource is its event loop (one per process). A fixed in-flight limit is
wrong at one end or the other: in drill D7 (a 10x spike on 2 cores, run with the drill's 10 Hz
metrics poll adding load) a limit of 64 let the loop congest, Feast reads missed their 20 ms
timeout although Redis had answered, the fallbacks added work and accepted requests took 1.1 s
at p99, while 16 kept it at 66-93 ms; but a steady 100 requests/s from 20 closed-loop clients
(``make loadtest``) keeps up to 20 in flight, and a limit of 16 refused 20% of it while the loop
was idle.

So the limit moves between ``floor`` and ``ceiling``, driven by the loop-lag probe that already
runs every 50 ms (``gateway.main``): a lag above ``lag_target_s`` (the loop is saturated, new work
only queues) multiplies it by ``decrease``; a lag below it adds ``increase``. From 64 it reaches 16
in about 13 congested probes (under a second); it climbs back by 20 per second once the loop
is idle. The idea is Netflix's concurrency-limits (AIMD) with the loop lag as the congestion
signal instead of request latency, which here includes the upstreams' own slowness.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdaptiveLimit:
    """The current in-flight limit (``limit``); ``ceiling`` 0 means no limit at all."""

    ceiling: int
    floor: int = 8
    lag_target_s: float = 0.010
    decrease: float = 0.9
    increase: float = 1.0
    _value: float = field(init=False)
    _last_lag_s: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if self.ceiling < 0 or self.floor < 1:
            raise ValueError("ceiling must be >= 0 and floor >= 1")
        if not 0.0 < self.decrease < 1.0 or self.increase <= 0 or self.lag_target_s <= 0:
            raise ValueError("decrease must be in (0, 1); increase and lag_target_s > 0")
        self.floor = min(self.floor, self.ceiling) if self.ceiling else self.floor
        self._value = float(self.ceiling)

    @property
    def limit(self) -> int:
        """Requests allowed in flight now (0: unlimited)."""
        return int(self._value) if self.ceiling else 0

    def saturated(self) -> bool:
        """Whether the newest loop-lag reading was above the target (new work only queues)."""
        return self._last_lag_s > self.lag_target_s

    def observe_lag(self, lag_s: float) -> int:
        """Adjust to one loop-lag reading; returns the new limit."""
        self._last_lag_s = lag_s
        if self.ceiling:
            if lag_s > self.lag_target_s:
                self._value = max(float(self.floor), self._value * self.decrease)
            else:
                self._value = min(float(self.ceiling), self._value + self.increase)
        return self.limit
