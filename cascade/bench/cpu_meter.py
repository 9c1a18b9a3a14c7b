"""CPU milliseconds per request, per process, over a measured window of the serving benchmark.

A machine's speed moves req/s and latency 2.5-3x; the CPU a process spends per request moves
far less, so ``make bench-serve`` reports it for every row: the user+system CPU time of each
process (and its descendants: Triton's Python backend scores in a stub child process) read
before and after the measured window, divided by the requests served in that window.

``stack_pids`` finds the gateway, the MF service and tritonserver under ``cascade up``'s process;
``check_quota`` / ``quota_notes`` are the report's side of a cgroup CPU quota (``--gateway-cpu``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from cascade.bench.closed_loop import BenchRow
from cascade.cpu_quota import CpuQuota, CpuQuotaError

SELF = 0  # the pid that means this process alone, not its children: the in-process driver


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants; NaN once it is gone.

    ``SELF``: this process's own CPU time (its children are the services under test)."""
    import psutil

    if pid == SELF:
        return time.process_time()

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return math.nan
    total = 0.0
    for p in procs:
        try:
            times = p.cpu_times()
        except psutil.Error:  # a child that exited meanwhile
            continue
        total += times.user + times.system
    return total


def cpu_ms_per_request(
    before: Mapping[str, float], after: Mapping[str, float], requests: float
) -> dict[str, float]:
    """``1000 * (after - before) / requests`` per process; none without requests or a reading.

    With seconds for ``requests``, the CPU ms per second (``idle_cpu``)."""
    if requests <= 0:
        return {}
    out: dict[str, float] = {}
    for name, start in before.items():
        spent = after.get(name, math.nan) - start
        if math.isfinite(spent):
            out[name] = round(1000 * max(spent, 0.0) / requests, 3)
    return out


class CpuMeter:
    """``start()`` just before the measured window, ``finish(row)`` after it.

    ``pids`` maps a column name (``gateway``, ``mf``, ``triton``, ``bare_app``, ``driver``) to a
    process id (``SELF`` for this process alone).
    """

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.before: dict[str, float] = {}

    def snapshot(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def start(self) -> None:
        self.before = self.snapshot()

    def finish(self, row: BenchRow) -> BenchRow:
        """``row`` with ``cpu_ms_per_req`` filled from the window since ``start()``."""
        if not self.pids:
            return row
        per = cpu_ms_per_request(self.before, self.snapshot(), row.requests)
        return dataclasses.replace(row, cpu_ms_per_req=per)


async def idle_cpu(pids: Mapping[str, int], seconds: float = 2.0) -> dict[str, float]:
    """CPU ms per second of each process while nothing is sent: the background cost (timers,
    health loops, Triton's polling) that every row's CPU ms/req also carries."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    await asyncio.sleep(seconds)
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    return cpu_ms_per_request(before, after, seconds)


def stack_pids(stack_pid: int) -> dict[str, int]:
    """``gateway`` / ``mf`` / ``triton`` pids among the children of ``cascade up`` (pid)."""
    import psutil

    found: dict[str, int] = {}
    for child in psutil.Process(stack_pid).children():
        try:
            argv = child.cmdline()
        except psutil.Error:
            continue
        name = classify(argv)
        if name:
            found[name] = child.pid
    return found


def classify(argv: list[str]) -> str | None:
    """Which of the stack's services a command line runs, if any."""
    if argv and argv[0].endswith("tritonserver"):
        return "triton"
    for module, name in (("gateway", "gateway"), ("fallback_mf", "mf")):
        if any(a == "-m" and b == module for a, b in itertools.pairwise(argv)):
            return name
    return None


def _throttled(name: str, t: dict[str, float]) -> str:
    return (
        f"{name} {t['throttled_s']:.2f} s ({t['throttled_periods']:.0f} of "
        f"{t['periods']:.0f} periods)"
    )


def quota_notes(serve: dict[str, Any] | None, mf: dict[str, Any] | None) -> list[str]:
    """One line per CPU quota applied: the CPUs and the time throttled while measuring."""
    out = []
    quota = (serve or {}).get("cpu_quota")
    if quota:
        out.append(
            f"**CPU quota {quota['cpus']:g} CPU** (cgroup, one group per process) on the gateway, "
            "the breaker-open gateway and the bare app; throttled while the rows ran (warm-ups "
            "included): " + "; ".join(_throttled(n, t) for n, t in quota["throttled"].items()) + "."
        )
    if mf and mf.get("cpu_quota") is not None and mf.get("throttled"):
        out.append(
            f"**CPU quota {mf['cpu_quota']:g} CPU** on the MF service of the open-loop row; "
            + _throttled("throttled", mf["throttled"])
            + "."
        )
    return out


def check_quota(flag: str, cpus: float | None) -> str | None:
    """``None`` when a cgroup quota of ``cpus`` CPUs can be applied here, else why not."""
    if cpus is None:
        return None
    try:
        with CpuQuota(f"cascade-bench-check-{os.getpid()}", cpus=cpus):
            pass
    except CpuQuotaError as exc:
        return (
            f"bench-serve: {flag} {cpus:g} cannot be applied: {exc}. A CPU quota needs a cgroup "
            f"CPU controller and root (or a delegated cgroup); run without {flag}."
        )
    return None


def throttle_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``CpuQuota.throttled()`` over a window: the difference of two readings, rounded."""
    return {key: round(after[key] - before.get(key, 0.0), 3) for key in after}
