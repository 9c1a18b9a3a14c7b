"""ALS training and scoring: the recommender contract, fresh and loaded from disk, plus the
single-user fast path and training options."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fallback_mf.artifacts import load_als, save_als
from fallback_mf.train import interaction_matrix, train_als
from tests.contract import RecommenderContract, contract_interactions


def _train(frame: pd.DataFrame, **kw):
    params = {"factors": 8, "iterations": 5, "threads": 1, "progress": False, "seed": 3}
    params.update(kw)
    return train_als(interactions=frame, **params)


class TestAlsContract(RecommenderContract):
    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls) -> pd.DataFrame:
        return contract_interactions()

    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, train_interactions):
        return _train(train_interactions)


class TestLoadedAlsContract(RecommenderContract):
    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls) -> pd.DataFrame:
        return contract_interactions(seed=1)

    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, train_interactions, tmp_path_factory):
        directory = save_als(
            _train(train_interactions), artifacts_dir=tmp_path_factory.mktemp("artifacts")
        )
        return load_als(directory)


@pytest.fixture(scope="module")
def model():
    return _train(contract_interactions())


def test_unknown_exclude_ids_are_ignored(model):
    items, _ = model.recommend(model.user_ids[:1], k=3, exclude=[np.array([-5, 10**9])])
    assert (items >= 0).all()


def test_training_is_deterministic_for_a_seed():
    frame = contract_interactions()
    a, b = _train(frame), _train(frame)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)


def test_metadata_records_params_and_versions(model):
    assert model.metadata["params"]["factors"] == 8
    assert model.metadata["libraries"]["implicit"]
    assert model.user_factors.dtype == np.float32 and model.item_factors.dtype == np.float32


def test_interaction_matrix_sums_counts_and_ratings():
    frame = pd.DataFrame({"user_id": [5, 5, 7], "item_id": [3, 3, 9], "rating": [2.0, 4.0, 1.0]})
    counts, users, items = interaction_matrix(frame, confidence="count")
    assert users.tolist() == [5, 7] and items.tolist() == [3, 9]
    assert counts.toarray().tolist() == [[2.0, 0.0], [0.0, 1.0]]
    ratings, _, _ = interaction_matrix(frame, confidence="rating")
    assert ratings.toarray().tolist() == [[6.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(
    ("frame", "kw", "message"),
    [
        (pd.DataFrame({"user_id": [], "item_id": []}), {}, "no interactions"),
        (
            pd.DataFrame({"user_id": [1], "item_id": [2], "rating": [-1.0]}),
            {"confidence": "rating"},
            "positive",
        ),
        (pd.DataFrame({"user_id": [1], "item_id": [2]}), {"confidence": "votes"}, "confidence"),
        (pd.DataFrame({"user_id": [1], "item_id": [2]}), {"factors": 0}, "factors"),
    ],
)
def test_bad_training_input_raises(frame, kw, message):
    with pytest.raises(ValueError, match=message):
        _train(frame, **kw)
