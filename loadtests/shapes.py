"""Load shapes for Locust: steady, ramp and spike. Imports only the stdlib and locust.

Each user sends ``CASCADE_USER_RPS`` requests/s (``constant_throughput`` in the locustfile), so
users x that rate is the offered load. Selected by ``CASCADE_LOAD_SHAPE`` (see
``loadtests/locustfile.py``); sizes from the environment:

- ``steady``: ``CASCADE_USERS`` users for ``CASCADE_DURATION_S`` seconds.
- ``ramp``: from 1 to ``CASCADE_USERS`` users over the first ``CASCADE_RAMP_S`` seconds, then held.
- ``spike``: ``CASCADE_USERS`` users; at ``CASCADE_SPIKE_AT_S`` 10x (``CASCADE_SPIKE_FACTOR``) within
  1 s, held ``CASCADE_SPIKE_HOLD_S``, then back to the base until the end.
"""

from __future__ import annotations

import os

from locust import LoadTestShape


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class SteadyShape(LoadTestShape):
    """A constant number of users."""

    def __init__(self) -> None:
        super().__init__()
        self.users = int(_env_float("CASCADE_USERS", 10))
        self.duration_s = _env_float("CASCADE_DURATION_S", 60)

    def tick(self) -> tuple[int, float] | None:
        if self.get_run_time() >= self.duration_s:
            return None
        return self.users, float(self.users)  # all of them within the first second


class RampShape(LoadTestShape):
    """Linear ramp to the target, then held."""

    def __init__(self) -> None:
        super().__init__()
        self.users = int(_env_float("CASCADE_USERS", 10))
        self.duration_s = _env_float("CASCADE_DURATION_S", 60)
        self.ramp_s = max(1.0, _env_float("CASCADE_RAMP_S", self.duration_s / 2))

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.duration_s:
            return None
        target = max(1, round(self.users * min(1.0, t / self.ramp_s)))
        return target, max(1.0, self.users / self.ramp_s)


class SpikeShape(LoadTestShape):
    """Base load, a jump to ``factor`` x within one second, held, then back."""

    def __init__(self) -> None:
        super().__init__()
        self.users = int(_env_float("CASCADE_USERS", 10))
        self.duration_s = _env_float("CASCADE_DURATION_S", 60)
        self.factor = _env_float("CASCADE_SPIKE_FACTOR", 10)
        self.at_s = _env_float("CASCADE_SPIKE_AT_S", self.duration_s / 4)
        self.hold_s = _env_float("CASCADE_SPIKE_HOLD_S", self.duration_s / 4)

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.duration_s:
            return None
        peak = round(self.users * self.factor)
        if self.at_s <= t < self.at_s + self.hold_s:
            return peak, float(peak)  # spawn the difference within 1 s
        return self.users, float(peak)  # and drop back as fast


SHAPES: dict[str, type[LoadTestShape]] = {
    "steady": SteadyShape,
    "ramp": RampShape,
    "spike": SpikeShape,
}


def from_env() -> type[LoadTestShape] | None:
    """The shape named by ``CASCADE_LOAD_SHAPE`` (None when unset: Locust's -u/-r/-t apply)."""
    name = os.environ.get("CASCADE_LOAD_SHAPE", "").strip().lower()
    if not name:
        return None
    if name not in SHAPES:
        raise ValueError(f"CASCADE_LOAD_SHAPE={name!r}: expected one of {', '.join(SHAPES)}")
    return SHAPES[name]
