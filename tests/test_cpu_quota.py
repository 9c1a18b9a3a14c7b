"""The slow-node harness: a real cgroup CPU quota holds a busy process to its share."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cascade.cpu_quota import CpuQuota, CpuQuotaError

BURN = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass\n"


def test_a_quota_holds_a_busy_process_to_its_share() -> None:
    try:
        quota = CpuQuota(f"cascade-test-{time.monotonic_ns()}", cpus=0.25).__enter__()
    except CpuQuotaError as exc:
        pytest.skip(f"no cgroup CPU quota here: {exc}")
    try:
        proc = subprocess.Popen([sys.executable, "-c", BURN])
        quota.add(proc.pid)
        proc.wait(timeout=30)
        stats = quota.throttled()
    finally:
        quota.__exit__(None, None, None)
    # The burner spins for 1.5 s of wall time; held to a quarter of a CPU, the kernel throttled it.
    assert stats["throttled_periods"] > 0 and stats["throttled_s"] > 0.3, stats
    assert not quota.path.exists()


def test_bad_share_is_refused() -> None:
    with pytest.raises(CpuQuotaError):
        CpuQuota("x", cpus=0)
