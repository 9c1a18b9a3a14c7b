"""Shared fixtures: a tiny Two-Tower trained in memory on the contract frame."""

from __future__ import annotations

import pytest

from tests.contract import contract_interactions
from two_tower.train import TrainParams

TINY = TrainParams(
    dim=8,
    hidden=16,
    side_dim=4,
    seen_pool=10,
    epochs=3,
    batch_size=32,
    lr=0.01,
    members=2,  # an ensemble, so the ensemble path stays covered (one tower is the default)
    progress=False,
    threads=1,
    device="cpu",
)


@pytest.fixture(scope="session")
def tiny_interactions():
    return contract_interactions()


@pytest.fixture(scope="session")
def tiny_trained(tiny_interactions):
    from two_tower.pipeline import train_in_memory

    return train_in_memory(tiny_interactions, params=TINY)
