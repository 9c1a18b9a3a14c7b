"""The recent-popularity prior (``two_tower.item_prior``): counts over the window, beta chosen on
validation (0 when it does not help), the bias carried by the artifact and added by the offline
recommender (Triton adds it too: ``test_triton_integration``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from cascade.runtime.schema import ITEM_ID, TIMESTAMP, USER_ID
from tests.two_tower.checks import assert_ranks_first
from two_tower.artifacts import ArtifactError, load_two_tower_artifact, save_two_tower
from two_tower.item_prior import BETA_GRID, choose_beta, item_bias, recent_counts


def _log(rows: list[tuple[int, int, str]]) -> pd.DataFrame:
    users, items, days = zip(*rows, strict=True)
    return pd.DataFrame(
        {USER_ID: users, ITEM_ID: items, TIMESTAMP: pd.to_datetime(list(days), utc=True)}
    )


def test_recent_counts_cover_the_last_window_before_the_newest_event() -> None:
    log = _log(
        [
            (1, 10, "2026-01-01"),  # 40 days before the newest event: outside
            (1, 20, "2026-01-20"),
            (2, 20, "2026-02-09"),
            (2, 30, "2026-02-10"),
            (3, 99, "2026-02-10"),  # not in the vocabulary: ignored
        ]
    )
    counts = recent_counts(log, np.array([10, 20, 30, 40]), window_days=30)
    assert counts.tolist() == [0, 2, 1, 0]
    assert recent_counts(log.iloc[0:0], np.array([10])).tolist() == [0]


def test_the_bias_is_beta_log1p_and_finite() -> None:
    bias = item_bias(np.array([0, 1, 1000]), 0.01)
    assert bias.dtype == np.float32 and np.isfinite(bias).all()
    np.testing.assert_allclose(bias, 0.01 * np.log1p([0, 1, 1000]), rtol=1e-6)


def test_beta_is_the_best_on_validation_and_the_smaller_on_a_tie() -> None:
    counts = np.array([1.0, 5.0])

    def peaked_at(best: float):
        return lambda bias: -abs((0.0 if bias is None else bias[1] / np.log1p(5.0)) - best)

    assert choose_beta(peaked_at(0.01), counts)[0] == 0.01
    beta, recalls = choose_beta(lambda bias: 0.2, counts)  # no gain anywhere: no prior
    assert beta == 0.0 and set(recalls) == {str(b) for b in BETA_GRID}


def test_training_with_validation_records_the_prior(tiny_interactions) -> None:
    from tests.two_tower.conftest import TINY
    from two_tower.pipeline import train_in_memory

    trained = train_in_memory(
        tiny_interactions, params=dataclasses.replace(TINY, members=1, epochs=1), val_fraction=0.5
    )
    prior = trained.metadata["prior"]
    assert prior["beta"] in BETA_GRID and set(prior["validation_recall@20"]) == {
        str(b) for b in BETA_GRID
    }
    assert (trained.item_bias is None) == (prior["beta"] == 0.0)


def test_the_artifact_carries_the_bias_and_the_recommender_adds_it(
    tiny_trained, tiny_interactions, tmp_path
) -> None:
    bias = np.zeros(len(tiny_trained.item_ids), np.float32)
    bias[3] = 100.0  # item 3 first for everyone who has not seen it
    folder = save_two_tower(
        dataclasses.replace(tiny_trained, item_bias=bias), artifacts_dir=tmp_path
    )
    loaded = load_two_tower_artifact(folder)
    np.testing.assert_array_equal(loaded.item_bias, bias)
    assert_ranks_first(loaded, tiny_interactions, int(tiny_trained.item_ids[3]))
    np.save(folder / "item_bias.npy", np.full_like(bias, np.nan), allow_pickle=False)
    with pytest.raises(ArtifactError, match="finite"):
        load_two_tower_artifact(folder)
