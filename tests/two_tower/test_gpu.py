"""On a CUDA machine: training runs on the GPU and gives the same contract-valid recommender."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.two_tower.conftest import TINY

pytestmark = pytest.mark.gpu


def test_training_on_cuda_gives_unit_vectors_and_top_k(tiny_interactions):
    from two_tower.pipeline import train_in_memory
    from two_tower.recommender import TwoTowerRecommender

    trained = train_in_memory(tiny_interactions, params=replace(TINY, device="cuda"))
    assert np.allclose(np.linalg.norm(trained.item_embeddings, axis=1), 1.0, atol=1e-4)
    rec = TwoTowerRecommender.from_trained(trained, interactions=tiny_interactions)
    items, _ = rec.recommend(np.unique(tiny_interactions["user_id"])[:5], k=5)
    assert items.shape == (5, 5)
