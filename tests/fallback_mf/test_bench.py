"""The benchmark helpers of ``cascade.bench.mf_train`` and ``cascade.bench.mf_service``
(moved out of the deployable package) return the fields the bench reports print."""

from __future__ import annotations

from cascade.bench.mf_train import bench_evaluate, bench_train
from tests.contract import contract_interactions


def test_bench_train_and_evaluate_report_time_and_memory():
    frame = contract_interactions()
    train = bench_train(interactions=frame, factors=4, iterations=2, threads=1)
    assert train["seconds"] >= 0 and train["peak_rss_mb"] > 0 and train["users"] == 40
    ev = bench_evaluate(interactions=frame, factors=4, iterations=2)
    assert ev["seconds"] >= 0 and ev["peak_rss_mb"] > 0 and "| Recall@20 |" in ev["report"]


def test_mf_service_bench_pieces() -> None:
    """The parts of ``cascade.bench.mf_service`` that need no running service."""
    from cascade.bench.mf_service import histogram_quantiles, random_model, scoring_micro

    model = random_model(n_users=50, n_items=30, factors=4)
    assert (model.n_users, model.n_items) == (50, 30)
    assert set(scoring_micro(sizes=(30,), k=5, n=3)) == {30}
    route = "/v1/recommendations/{user_id}"
    text = "\n".join(
        f'mf_request_duration_seconds_bucket{{le="{le}",route="{route}"}} {n}'
        for le, n in (("0.001", 50), ("0.005", 99), ("0.01", 100), ("+Inf", 100))
    )
    assert histogram_quantiles(text, route=route) == [1.0, 5.0]
