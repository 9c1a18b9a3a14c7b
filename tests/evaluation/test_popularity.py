"""PopularityRecommender: the contract, plus its ranking rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cascade.recommenders import PopularityRecommender, UserItems, top_k
from tests.contract import RecommenderContract, contract_interactions


class TestPopularityContract(RecommenderContract):
    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls) -> pd.DataFrame:
        return contract_interactions()

    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, train_interactions):
        return PopularityRecommender.from_interactions(train_interactions)


def _frame(pairs):
    users, items = zip(*pairs, strict=True)
    return pd.DataFrame({"user_id": users, "item_id": items})


def test_ranking_is_by_count_then_item_id():
    pop = PopularityRecommender.from_interactions(
        _frame([(1, 7), (2, 7), (3, 5), (4, 9), (1, 9), (2, 3)])
    )
    assert pop.items.tolist() == [7, 9, 3, 5]
    assert pop.counts.tolist() == [2, 2, 1, 1]


def test_skips_seen_and_exclude_and_pads():
    pop = PopularityRecommender.from_interactions(
        _frame([(1, 7), (2, 7), (1, 9), (2, 9), (2, 3), (3, 5)])
    )
    items, scores = pop.recommend(
        np.array([1, 2, 99]), k=3, exclude=[np.array([3]), np.array([]), np.array([7, 42])]
    )
    assert items.tolist() == [[5, -1, -1], [5, -1, -1], [9, 3, 5]]
    assert scores[0, 0] == 1.0 and np.isneginf(scores[0, 1:]).all()
    assert scores[2].tolist() == [2.0, 1.0, 1.0]


def test_without_seen_only_exclude_applies():
    pop = PopularityRecommender(items=np.array([4, 2, 8]), counts=np.array([9, 5, 1]))
    items, _ = pop.recommend(np.array([1]), k=2, exclude=[np.array([4])])
    assert items.tolist() == [[2, 8]]


def test_bad_requests_raise():
    pop = PopularityRecommender(items=np.array([1]), counts=np.array([1]))
    with pytest.raises(ValueError, match="k must be"):
        pop.recommend(np.array([1]), k=0)
    with pytest.raises(ValueError, match="exclude has"):
        pop.recommend(np.array([1, 2]), k=1, exclude=[np.array([1])])


def test_user_items_rows_and_positions():
    ui = UserItems.from_pairs(np.array([5, 3, 5, 5, 9]), np.array([2, 1, 2, 0, 4]))
    assert ui.user_ids.tolist() == [3, 5, 9]
    assert ui.positions(np.array([5, 4, 9, 100])).tolist() == [1, -1, 2, -1]
    assert ui.row(1).tolist() == [0, 2]
    rows, items = ui.rows(np.array([2, -1, 1]))
    assert rows.tolist() == [0, 2, 2] and items.tolist() == [4, 0, 2]


def test_top_k_pads_masked_and_breaks_ties_by_index():
    scores = np.array(
        [[1.0, 3.0, 3.0, -np.inf], [-np.inf, -np.inf, 2.0, -np.inf]], dtype=np.float32
    )
    idx, best = top_k(scores, 3)
    assert idx.tolist() == [[1, 2, 0], [2, -1, -1]]
    assert best[1, 0] == 2.0 and np.isneginf(best[1, 1:]).all()
    idx, _ = top_k(scores, 6)  # k above the catalogue size
    assert idx.shape == (2, 6) and idx[0].tolist() == [1, 2, 0, -1, -1, -1]
