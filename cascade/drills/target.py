"""What a drill acts on: the gateway's URL and pid, the upstream processes, proxies, settings.

The drills do not care who started the stack: ``make drill`` builds one with fault proxies in
between (``cascade.drills.stack``); the CI test adapts the integration tests' ``GatewayStack``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cascade.drills.fault_modes import Mode


class Signalable(Protocol):
    """A process the drills can crash, hang and resume (``cascade.runtime.procs.ManagedProcess``)."""

    def kill(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def running(self) -> bool: ...


class FaultControl(Protocol):
    """A fault proxy, in this process (``FaultProxy``) or in the hub (``RemoteProxy``)."""

    def set_mode(self, mode: Mode) -> None: ...
    def snapshot(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class GatewayFacts:
    """The gateway settings the pass criteria depend on (defaults: ``gateway/settings.py``)."""

    deadline_ms: float = 250.0
    feature_timeout_ms: float = 20.0
    primary_timeout_ms: float = 100.0
    breaker_wait_s: float = 5.0
    half_open_calls: int = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewayFacts:
        """Read the ``GATEWAY_*`` variables a gateway was started with."""
        d = cls()
        return cls(
            deadline_ms=float(env.get("GATEWAY_DEADLINE_MS", d.deadline_ms)),
            feature_timeout_ms=float(env.get("GATEWAY_FEATURE_TIMEOUT_MS", d.feature_timeout_ms)),
            primary_timeout_ms=float(env.get("GATEWAY_PRIMARY_TIMEOUT_MS", d.primary_timeout_ms)),
            breaker_wait_s=float(env.get("GATEWAY_BREAKER_WAIT_S", d.breaker_wait_s)),
            half_open_calls=int(env.get("GATEWAY_BREAKER_HALF_OPEN_CALLS", d.half_open_calls)),
        )


@dataclass
class DrillTarget:
    """A running stack. ``procs`` holds ``triton``, ``mf`` and ``redis`` (and ``nats`` and
    ``events``, the consumer, when the stack runs the event log).

    ``restore(name)`` brings a killed component back *with its data* (Redis: restarted and,
    when it keeps nothing on disk, materialized again) and returns when it serves.
    ``heal()`` resumes and restarts whatever is down, resets the proxies, and returns when the
    primary serves again. Both block: drills call them in a thread while load runs.
    """

    url: str
    gateway_pid: int
    users: list[int]  # known user ids, most active first (Zipf rank order)
    procs: Mapping[str, Signalable]
    restore: Callable[[str], None]
    heal: Callable[[], None]
    facts: GatewayFacts = field(default_factory=GatewayFacts)
    proxies: Mapping[str, FaultControl] = field(default_factory=dict)
    # The events consumer's base URL (``/metrics``) and the Redis it writes: D12. Empty: the
    # stack runs no event log, and D12 reports that instead of a verdict.
    events_url: str = ""
    redis_url: str = ""
    events_prefix: str = ""  # the consumer's Redis key prefix (events.state.key_prefix)
