"""The offline benchmark helpers return the fields `make bench-offline` prints."""

from __future__ import annotations

from fallback_mf.bench import bench_evaluate, bench_train
from tests.contract import contract_interactions


def test_bench_train_and_evaluate_report_time_and_memory():
    frame = contract_interactions()
    train = bench_train(interactions=frame, factors=4, iterations=2, threads=1)
    assert train["seconds"] >= 0 and train["peak_rss_mb"] > 0 and train["users"] == 40
    ev = bench_evaluate(interactions=frame, factors=4, iterations=2)
    assert ev["seconds"] >= 0 and ev["peak_rss_mb"] > 0 and "| Recall@20 |" in ev["report"]
