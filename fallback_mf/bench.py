"""ALS training benchmark for ``make bench-offline``: wall time and peak memory of one fit."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import pandas as pd

from fallback_mf.train import default_threads, train_als

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the next reading covers one phase only."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (since the last reset where Linux allows it)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def bench_train(
    *,
    interactions: pd.DataFrame,
    factors: int = 64,
    iterations: int = 15,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train ALS once on ``interactions`` and report seconds and peak RSS.

    ``peak_rss_mb`` is the process peak during the fit when the kernel lets the mark be reset
    (``peak_is_phase``), otherwise the process's lifetime peak.
    """
    threads = threads or default_threads()
    rss_before = (_status_kib("VmRSS") or 0) * 1024
    phase = _reset_peak_rss()
    started = time.perf_counter()
    model = train_als(
        interactions=interactions,
        factors=factors,
        iterations=iterations,
        threads=threads,
        progress=False,
    )
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()
    return {
        "step": "als_train",
        "seconds": round(seconds, 2),
        "seconds_per_iteration": round(seconds / iterations, 3),
        "peak_rss_mb": round(peak / 2**20, 1),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "peak_is_phase": phase,
        "users": model.n_users,
        "items": model.n_items,
        "interactions": len(interactions),
        "factors": factors,
        "iterations": iterations,
        "threads": threads,
    }


if __name__ == "__main__":  # python -m fallback_mf.bench [scale]
    import sys

    from cascade.data.synthetic import generate

    scale = sys.argv[1] if len(sys.argv) > 1 else "demo"
    print(bench_train(interactions=generate(scale=scale, seed=42).interactions))
