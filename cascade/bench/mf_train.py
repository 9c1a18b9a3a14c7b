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


def bench_evaluate(
    *,
    interactions: pd.DataFrame,
    max_users: int | None = 20_000,
    factors: int = 64,
    iterations: int = 15,
    dataset: str = "benchmark data",
) -> dict[str, Any]:
    """Split, train ALS on the train side, then time the evaluation of popularity and ALS.

    ``seconds`` and ``peak_rss_mb`` cover the evaluation only (ground truth + both models);
    ``report`` is the evaluation's markdown table.
    """
    from cascade.evaluation.report import evaluate
    from cascade.evaluation.split import temporal_split
    from cascade.recommenders import PopularityRecommender

    train, test = temporal_split(interactions)
    als = train_als(interactions=train, factors=factors, iterations=iterations, progress=False)
    popular = PopularityRecommender.from_interactions(train)
    phase = _reset_peak_rss()
    started = time.perf_counter()
    report = evaluate([popular, als], train, test, max_users=max_users, dataset=dataset)
    seconds = time.perf_counter() - started
    return {
        "step": "evaluation",
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
        "peak_is_phase": phase,
        "users_evaluated": report.users_evaluated,
        "recall@20": {name: round(m["recall@20"], 4) for name, m in report.models.items()},
        "als_over_popular": round(report.ratio("als") or 0.0, 2),
        "report": report.to_markdown(),
    }


if __name__ == "__main__":  # python -m cascade.bench.mf_train [scale]
    import sys

    from cascade.data.synthetic import generate

    scale = sys.argv[1] if len(sys.argv) > 1 else "demo"
    frame = generate(scale=scale, seed=42).interactions
    print(bench_train(interactions=frame))
    result = bench_evaluate(interactions=frame, dataset=scale)
    print(result.pop("report"))
    print(result)
