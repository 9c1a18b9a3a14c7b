"""Metrics on cases small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cascade.evaluation.metrics import (
    MetricAccumulator,
    evaluate_recommender,
    ground_truth,
    hit_matrix,
)
from cascade.recommenders import PopularityRecommender


def _acc(recs, relevant, catalogue=100):
    acc = MetricAccumulator(catalogue_size=catalogue, max_k=50)
    padded = np.full((len(recs), 50), -1, dtype=np.int64)
    for i, row in enumerate(recs):
        row = row[:50]
        padded[i, : len(row)] = row
    acc.add(padded, [np.asarray(r, dtype=np.int64) for r in relevant])
    return acc.result()


def test_hit_matrix_ignores_padding():
    hits = hit_matrix(np.array([[5, 1, -1], [2, 3, 4]]), [np.array([1, 7]), np.array([4])])
    assert hits.tolist() == [[False, True, False], [False, False, True]]


def test_single_user_by_hand():
    # relevant {1, 2, 3}; hits at ranks 2 and 5 (rank counted from 1)
    r = _acc([[9, 1, 8, 7, 3, *list(range(10, 60))]], [[1, 2, 3]])
    assert r["recall@10"] == pytest.approx(2 / 3)  # 2 hits / min(10, 3)
    assert r["recall_curve"][0] == 0.0  # K=1: 0 / min(1, 3)
    assert r["recall_curve"][1] == pytest.approx(1 / 2)  # K=2: 1 hit / min(2, 3)
    assert r["recall_curve"][4] == pytest.approx(2 / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert r["ndcg@10"] == pytest.approx(dcg / idcg)
    assert r["ndcg@20"] == pytest.approx(dcg / idcg)
    assert r["hit_rate@10"] == 1.0
    assert r["users"] == 1


def test_recall_denominator_is_min_k_and_relevant():
    # 30 relevant items, 10 hits in the top 10: Recall@10 = 10 / min(10, 30) = 1
    relevant = list(range(30))
    r = _acc([list(range(10)) + list(range(100, 140))], [relevant])
    assert r["recall@10"] == 1.0
    assert r["recall@20"] == pytest.approx(10 / 20)
    assert r["ndcg@10"] == pytest.approx(1.0)


def test_average_over_users_and_coverage():
    recs = [[1, 2, *list(range(100, 148))], [3, 1, *list(range(100, 148))]]
    r = _acc(recs, [[2], [5]], catalogue=200)
    assert r["recall@10"] == pytest.approx(0.5)  # user 1 hit, user 2 missed
    assert r["hit_rate@10"] == pytest.approx(0.5)
    assert r["ndcg@10"] == pytest.approx((1 / math.log2(3)) / 2)
    # distinct items in the top 10s: 1, 2, 3 and 100..107
    assert r["coverage@10"] == pytest.approx(11 / 200)


def test_empty_relevant_set_is_rejected():
    with pytest.raises(ValueError, match="relevant"):
        _acc([[1]], [[]])


def test_ground_truth_drops_seen_test_items_and_samples():
    train = pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [10, 11, 10, 12]})
    test = pd.DataFrame({"user_id": [1, 1, 2, 3, 4], "item_id": [10, 12, 10, 13, 14]})
    truth = ground_truth(train, test)
    # user 1 keeps only item 12 (10 was in train); user 2's only test item was seen -> dropped
    assert truth.user_ids.tolist() == [1, 3, 4]
    assert truth.relevant.row(0).tolist() == [12]
    assert truth.catalogue_size == 3
    sampled = ground_truth(train, test, max_users=2, seed=0)
    assert len(sampled.user_ids) == 2 and sampled.total_users == 3
    assert (
        ground_truth(train, test, max_users=2, seed=0).user_ids.tolist()
        == sampled.user_ids.tolist()
    )


def test_evaluate_popularity_end_to_end():
    train = pd.DataFrame({"user_id": [1, 2, 3, 3], "item_id": [10, 10, 11, 10]})
    test = pd.DataFrame({"user_id": [1, 2], "item_id": [11, 12]})
    truth = ground_truth(train, test)
    r = evaluate_recommender(PopularityRecommender.from_interactions(train), truth, batch_size=1)
    # user 1 (saw 10) gets [11] -> hit; user 2 (saw 10) gets [11] -> miss (12 is not in train)
    assert r["recall@10"] == pytest.approx(0.5)
    assert r["users"] == 2
