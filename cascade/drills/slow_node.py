"""A machine 2-3x slower, here: the gateway held to a CPU quota (``GATEWAY_CPU=0.5``).

:class:`GatewayQuota` wraps :class:`cascade.cpu_quota.CpuQuota` for the load test and the
drills: a group named after this process (two runs at once do not share it), the gateway's pid
moved in (and its children), and the figures a run prints: the CPU the gateway used (cores) and
how often the quota throttled it. :func:`find_gateway_pid` finds the gateway of a running
``cascade up``: ``$CASCADE_HOME/run/stack.json`` when its pid listens on the port, else
whichever process listens there.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from types import TracebackType

from cascade.cpu_quota import CpuQuota, CpuQuotaError
from cascade.runtime.paths import Layout

__all__ = ["CpuQuotaError", "GatewayQuota", "find_gateway_pid", "throttle_figures"]


def _listens(pid: int, port: int) -> bool:
    import psutil

    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)


def listening_pid(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` (None when none, or not visible)."""
    import psutil

    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return int(c.pid)
    return None


def find_gateway_pid(layout: Layout, port: int) -> int:
    """The gateway's pid (see the module docstring); CpuQuotaError when it cannot be found."""
    state = layout.run_dir / "stack.json"
    if state.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            named = int(json.loads(state.read_text())["gateway"]["pid"])
            if _listens(named, port):
                return named
    pid = listening_pid(port)
    if pid is None:
        raise CpuQuotaError(
            f"cannot find the gateway's pid: {state} names none listening on port {port}, "
            "and no visible process listens there"
        )
    return pid


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (those gone count 0)."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def throttle_figures(
    before: dict[str, float], after: dict[str, float], *, cpus: float
) -> dict[str, float]:
    """What changed between two :meth:`GatewayQuota.reading` s: CPU used (cores), periods, the
    share of them throttled and the seconds throttled."""
    wall = max(after["wall"] - before["wall"], 1e-9)
    periods = after["periods"] - before["periods"]
    throttled = after["throttled_periods"] - before["throttled_periods"]
    return {
        "quota_cpus": cpus,
        "seconds": round(wall, 1),
        "gateway_cpu_cores": round((after["cpu_s"] - before["cpu_s"]) / wall, 3),
        "periods": periods,
        "throttled_periods": throttled,
        "throttled_share": round(throttled / periods, 3) if periods else 0.0,
        "throttled_s": round(after["throttled_s"] - before["throttled_s"], 2),
    }


def describe(figures: dict[str, float]) -> str:
    """One line: ``gateway CPU quota 0.5: used 0.49 cores over 60 s; throttled in ...``."""
    return (
        f"gateway CPU quota {figures['quota_cpus']:g} CPU: used {figures['gateway_cpu_cores']:.2f}"
        f" cores over {figures['seconds']:.0f} s; throttled in {figures['throttled_periods']:.0f}"
        f"/{figures['periods']:.0f} periods ({figures['throttled_share']:.0%}),"
        f" {figures['throttled_s']:.1f} s throttled"
    )


class GatewayQuota:
    """The gateway's cgroup: ``with GatewayQuota(0.5) as q: q.add(pid); ... q.figures()``."""

    def __init__(self, cpus: float, *, name: str | None = None) -> None:
        self.cpus = cpus
        self.quota = CpuQuota(name or f"cascade-gateway-{os.getpid()}", cpus=cpus)
        self.pids: list[int] = []
        self.start: dict[str, float] | None = None

    def __enter__(self) -> GatewayQuota:
        self.quota.__enter__()
        return self

    def add(self, pid: int) -> None:
        """Move ``pid`` and its children into the group; the figures count from the first add."""
        import psutil

        children: list[int] = []
        with contextlib.suppress(psutil.Error):
            children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
        for p in (pid, *children):
            self.quota.add(p)
            if p not in self.pids:
                self.pids.append(p)
        if self.start is None:
            self.start = self.reading()

    def reading(self) -> dict[str, float]:
        return {"wall": time.monotonic(), "cpu_s": cpu_seconds(self.pids), **self.quota.throttled()}

    def figures(self, since: dict[str, float] | None = None) -> dict[str, float]:
        """Throttling since ``since`` (default: the first add) until now."""
        start = since or self.start or self.reading()
        return throttle_figures(start, self.reading(), cpus=self.cpus)

    def release(self) -> None:
        """Move the processes still alive back to the root group (a stack we did not start)."""
        root = self.quota.path.parent / "cgroup.procs"
        for pid in self.pids:
            with contextlib.suppress(OSError):
                root.write_text(f"{pid}\n")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
        self.quota.__exit__(exc_type, exc, tb)
