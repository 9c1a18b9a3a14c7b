"""A slow node on a fast machine: hold processes to a fraction of a CPU with a cgroup quota.

Serving figures differ 2.5-3x between machines of the same kind, so every serving target is also
checked with the service under test restricted (``make loadtest GATEWAY_CPU=0.5``, ``make
bench-serve GATEWAY_CPU=0.5``). This module creates a cgroup with a CFS quota and moves a
process into it (children started after that inherit it): cgroup v2 (``cpu.max``) where the
machine has it, else cgroup v1 (``cpu/<name>/cpu.cfs_quota_us``). Needs root (or a delegated
cgroup); :class:`CpuQuotaError` says why when it cannot be done. ``docs/platform-notes.md`` has
the same recipe by hand.

    with CpuQuota("cascade-gateway", cpus=0.5) as quota:
        quota.add(gateway_pid)
        ...                       # quota.throttled() -> (periods, throttled periods, seconds)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class CpuQuotaError(RuntimeError):
    """The quota cannot be applied here (no cgroup CPU controller, not permitted, bad value)."""


class CpuQuota:
    """A cgroup named ``name`` holding its processes to ``cpus`` CPUs (e.g. 0.5)."""

    def __init__(self, name: str, *, cpus: float, root: Path = CGROUP_ROOT) -> None:
        if not 0.01 <= cpus <= (os.cpu_count() or 1):
            raise CpuQuotaError(f"cpus must be in [0.01, {os.cpu_count()}], got {cpus}")
        self.cpus = cpus
        self.v2 = (root / "cgroup.controllers").is_file()
        self.path = root / name if self.v2 else root / "cpu" / name
        if not self.v2 and not (root / "cpu").is_dir():
            raise CpuQuotaError(f"no cgroup CPU controller under {root}")

    def __enter__(self) -> CpuQuota:
        try:
            self.path.mkdir(exist_ok=True)
            quota = int(self.cpus * PERIOD_US)
            if self.v2:
                (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
            else:
                (self.path / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
                (self.path / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        except OSError as exc:
            raise CpuQuotaError(f"cannot set a CPU quota at {self.path}: {exc}") from exc
        return self

    def add(self, pid: int) -> None:
        """Move ``pid`` into the group (its later children follow)."""
        try:
            (self.path / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as exc:
            raise CpuQuotaError(f"cannot move pid {pid} into {self.path}: {exc}") from exc

    def throttled(self) -> dict[str, float]:
        """``cpu.stat``: periods, throttled periods and throttled seconds so far."""
        stat = dict(
            line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line
        )
        if self.v2:
            return {
                "periods": float(stat.get("nr_periods", 0)),
                "throttled_periods": float(stat.get("nr_throttled", 0)),
                "throttled_s": float(stat.get("throttled_usec", 0)) / 1e6,
            }
        return {
            "periods": float(stat.get("nr_periods", 0)),
            "throttled_periods": float(stat.get("nr_throttled", 0)),
            "throttled_s": float(stat.get("throttled_time", 0)) / 1e9,
        }

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Remove the group once its processes are gone (waits up to 5 s for them to exit)."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # still has processes: they are exiting
                time.sleep(0.1)
