"""EASE: the closed form, the recommender contract, λ chosen on validation, the size limit and
the CLI (``cascade evaluate`` shows it beside the other models, ``cascade recommend`` serves it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cascade.cli import app
from cascade.data.resolve import resolve_dataset
from cascade.evaluation import ease
from cascade.evaluation.ease import (
    LAMBDA_GRID,
    CatalogueTooLarge,
    EaseRecommender,
    binary_matrix,
    ease_weights,
    fit_ease,
    gram_matrix,
    select_lambda,
)
from cascade.evaluation.model_data import ModelUnavailable
from cascade.evaluation.split import temporal_split
from cascade.runtime.paths import Layout
from tests.contract import RecommenderContract, contract_interactions

# 5 users x 4 items; the ids are not row indices, and user 30 repeats item 11
PAIRS = [
    (10, 11), (10, 12),
    (20, 12), (20, 13), (20, 14),
    (30, 11), (30, 13), (30, 11),
    (40, 11), (40, 12), (40, 14),
    (50, 14),
]  # fmt: skip
X = np.array(
    [[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 0, 1]], dtype=np.float64
)


def _frame(pairs: list[tuple[int, int]]) -> pd.DataFrame:
    users, items = zip(*pairs, strict=True)
    return pd.DataFrame(
        {
            "user_id": np.asarray(users, np.int64),
            "item_id": np.asarray(items, np.int64),
            "timestamp": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(np.arange(len(pairs)), unit="h"),
            "rating": np.ones(len(pairs), np.float32),
        }
    )


def _closed_form(x: np.ndarray, lam: float) -> np.ndarray:
    """Steck's closed form, written directly in float64."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p @ np.diag(1.0 / np.diag(p))
    np.fill_diagonal(b, 0.0)
    return b


@pytest.mark.parametrize("lam", [0.5, 10.0, 300.0])
def test_weights_match_the_closed_form(lam):
    history, user_ids, item_ids = binary_matrix(_frame(PAIRS))
    assert user_ids.tolist() == [10, 20, 30, 40, 50] and item_ids.tolist() == [11, 12, 13, 14]
    np.testing.assert_array_equal(history.toarray(), X)  # the repeated pair counts once
    gram = gram_matrix(history)
    np.testing.assert_array_equal(gram, X.T @ X)
    weights = ease_weights(gram, lam)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, _closed_form(X, lam), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(gram, X.T @ X)  # without overwrite the Gram is left alone


def test_recommend_scores_history_times_weights_and_skips_seen():
    model = EaseRecommender.fit(_frame(PAIRS), lam=1.0)
    items, scores = model.recommend(np.array([10, 50]), k=2)
    expected = X @ _closed_form(X, 1.0)
    # user 10 saw 11 and 12: only 13 and 14 remain, by their scores
    order = np.argsort(-expected[0, 2:], kind="stable")
    assert items[0].tolist() == [13 + int(j) for j in order]
    np.testing.assert_allclose(scores[0], expected[0, 2:][order], rtol=1e-5, atol=1e-6)
    assert 14 not in items[1].tolist()  # user 50 saw 14
    items, _ = model.recommend(np.array([20]), k=3)
    assert items[0].tolist()[0] == 11 and items[0].tolist()[1:] == [-1, -1]


def test_fit_uses_float32_without_a_copy_of_the_gram():
    gram = gram_matrix(binary_matrix(_frame(PAIRS))[0])
    weights = ease_weights(gram, 2.0, overwrite=True)
    assert np.shares_memory(weights, gram) and weights.dtype == np.float32


def test_lambda_must_be_positive():
    with pytest.raises(ValueError, match="λ > 0"):
        ease_weights(np.eye(2, dtype=np.float32), 0.0)


class TestEaseContract(RecommenderContract):
    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls) -> pd.DataFrame:
        return contract_interactions()

    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, train_interactions):
        return EaseRecommender.fit(train_interactions, lam=10.0)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("home")
    resolve_dataset("synthetic:tiny", layout=Layout(home=root))
    return root


@pytest.fixture(scope="module")
def tiny_train(home) -> pd.DataFrame:
    interactions = pd.read_parquet(home / "datasets" / "tiny" / "interactions.parquet")
    return temporal_split(interactions)[0]


def test_lambda_is_the_best_of_the_grid_and_deterministic(tiny_train):
    first = select_lambda(tiny_train)
    again = select_lambda(tiny_train.sample(frac=1.0, random_state=1))
    assert first == again
    assert list(first.recall) == list(LAMBDA_GRID)
    assert first.lam == max(first.recall, key=lambda g: first.recall[g])
    assert first.validation_users > 0


def test_lambda_ties_go_to_the_earlier_grid_value(tiny_train, monkeypatch):
    """The validation metric is replaced by a fixed table (one value per λ, in grid order), the
    only way to force a tie on real data."""
    table = iter([0.10, 0.30, 0.30, 0.20])
    monkeypatch.setattr(ease, "evaluate_recommender", lambda *a, **k: {"recall@20": next(table)})
    chosen = select_lambda(tiny_train, grid=[10.0, 50.0, 100.0, 300.0])
    assert chosen.lam == 50.0 and chosen.recall == {10.0: 0.1, 50.0: 0.3, 100.0: 0.3, 300.0: 0.2}


def test_fit_ease_refits_on_all_training_data_with_the_chosen_lambda(tiny_train):
    model = fit_ease(tiny_train)
    params = model.report_params
    assert params["lambda"] in LAMBDA_GRID
    assert params["lambda"] == select_lambda(tiny_train).lam
    assert set(params["validation_recall@20"]) == {f"{g:g}" for g in LAMBDA_GRID}
    assert params["items"] == tiny_train["item_id"].nunique() == model.n_items
    expected = ease_weights(gram_matrix(binary_matrix(tiny_train)[0]), params["lambda"])
    np.testing.assert_allclose(model.weights, expected, rtol=1e-6, atol=1e-7)
    json.dumps(params)  # goes into report.json as it is


def test_no_validation_users_falls_back_to_the_default_lambda():
    model = fit_ease(_frame(PAIRS))  # every user has fewer than 5 interactions
    assert model.report_params["lambda"] == ease.DEFAULT_LAMBDA
    assert model.report_params["validation_users"] == 0


def test_a_catalogue_above_the_limit_is_refused_before_fitting(monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("fitted although the catalogue is too large")

    monkeypatch.setattr(ease, "select_lambda", no_fit)
    with pytest.raises(CatalogueTooLarge) as caught:
        fit_ease(_frame(PAIRS), max_items=3)
    assert isinstance(caught.value, ModelUnavailable)  # evaluation skips it, does not fail
    assert str(caught.value).startswith("catalogue has 4 items, above EASE's limit of 3")
    assert "\n" not in str(caught.value)
    monkeypatch.setattr(ease, "MAX_ITEMS", 3)  # the module constant is the default limit
    with pytest.raises(CatalogueTooLarge):
        fit_ease(_frame(PAIRS))


def run(home: Path, *args: str):
    return CliRunner().invoke(app, list(args), env={"CASCADE_HOME": str(home)})


def test_evaluate_shows_ease_beside_the_other_models_by_default(home):
    result = run(home, "evaluate", "--dataset", "tiny")
    assert result.exit_code == 0, result.output
    assert "| metric | popular | als | ease |" in result.output
    assert "ease Recall@20 =" in result.output and "Parameters of ease: lambda = " in result.output
    assert "Skipped two_tower" in result.output  # no Two-Tower artifact in this home
    report = json.loads((home / "reports" / "tiny" / "report.json").read_text())
    assert list(report["models"]) == ["popular", "als", "ease"]
    assert report["models"]["ease"]["recall@20"] > report["models"]["popular"]["recall@20"]
    assert report["params"]["ease"]["lambda"] in LAMBDA_GRID


def test_evaluate_skips_ease_above_the_item_limit(home, monkeypatch):
    monkeypatch.setattr(ease, "MAX_ITEMS", 50)
    result = run(home, "evaluate", "--dataset", "tiny", "--models", "popular,ease")
    assert result.exit_code == 0, result.output
    assert "Skipped ease: catalogue has 200 items, above EASE's limit of 50" in result.output
    report = json.loads((home / "reports" / "tiny" / "report.json").read_text())
    assert list(report["models"]) == ["popular"] and "ease" in report["skipped"]


def test_recommend_with_ease(home, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("0\n5\n123456789\n")
    out = tmp_path / "recs.csv"
    result = run(
        home, "recommend", "--model", "ease", "--users", str(users), "--k", "7", "--out", str(out),
        "--dataset", "tiny",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    recs = pd.read_csv(out)
    assert recs.groupby("user_id")["rank"].apply(list).tolist() == [list(range(1, 8))] * 3
    train = temporal_split(pd.read_parquet(home / "datasets" / "tiny" / "interactions.parquet"))[0]
    seen = set(train.loc[train["user_id"] == 5, "item_id"])  # the model's training items
    assert seen and not seen & set(recs.loc[recs["user_id"] == 5, "item_id"])
