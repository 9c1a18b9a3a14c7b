"""Training options: the cosine learning-rate schedule and history dropout."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.two_tower.conftest import TINY
from two_tower.train import TrainParams, _lr_schedule


def _lrs(params: TrainParams, steps_per_epoch: int) -> list[float]:
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=params.lr)
    schedule = _lr_schedule(optimizer, params, steps_per_epoch=steps_per_epoch)
    out = []
    for _ in range(steps_per_epoch * params.epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if schedule is not None:
            schedule.step()
    return out


def test_constant_schedule_keeps_the_learning_rate() -> None:
    params = replace(TINY, lr=0.01, epochs=2)
    assert (
        _lr_schedule(
            torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01),
            params,
            steps_per_epoch=5,
        )
        is None
    )
    assert set(_lrs(params, 5)) == {0.01}


def test_cosine_schedule_decays_from_lr_towards_one_percent_over_all_epochs() -> None:
    params = replace(TINY, lr=0.01, epochs=2, lr_schedule="cosine")
    lrs = _lrs(params, 50)
    assert lrs[0] == pytest.approx(0.01)
    assert all(b <= a for a, b in itertools.pairwise(lrs))  # never rises
    assert lrs[50] == pytest.approx(0.01 * (0.01 + 0.99 * 0.5), rel=1e-3)  # half-way at epoch 2
    assert lrs[-1] == pytest.approx(0.0001, rel=0.05)


@pytest.mark.parametrize(
    "change",
    [
        {"lr_schedule": "linear"},
        {"history_dropout": 1.0},
        {"history_dropout": -0.1},
        {"logq_correction": 1.5},
    ],
)
def test_bad_options_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        replace(TINY, **change).check()  # type: ignore[arg-type]


def test_history_dropout_trains_hides_items_only_in_training_and_is_off_after(
    tiny_interactions,
) -> None:
    from two_tower.pipeline import train_in_memory

    trained = train_in_memory(
        tiny_interactions,
        params=replace(TINY, history_dropout=0.5, lr_schedule="cosine", members=1),
    )
    tower = trained.model.user_tower
    assert tower.history_dropout == 0.0  # the exported / evaluated tower never drops
    items = tower.item_vocab[:4].repeat(64, 1)
    tower.eval()
    full = tower._keep(tower._index(items))
    tower.history_dropout = 0.5
    assert torch.equal(tower._keep(tower._index(items)), full)  # eval mode: no dropout
    tower.train()
    try:
        assert not torch.equal(
            tower._keep(tower._index(items)), full
        )  # training: some rows lose items
    finally:
        tower.history_dropout = 0.0
        tower.eval()


def test_an_ensemble_scores_by_its_members_mean_cosine(tiny_trained) -> None:
    """Members trained with their own seeds; vectors side by side, scaled to unit length."""
    from two_tower.model import TowerEnsemble

    model = tiny_trained.model
    assert isinstance(model, TowerEnsemble) and len(model.members) == TINY.members == 2
    a, b = model.members
    assert not torch.equal(a.item_embedding.weight, b.item_embedding.weight)
    ids = a.item_tower.item_vocab[:5]
    feats = [torch.zeros_like(ids)] * 4
    joint = model.item_tower(ids, *feats)
    parts = [m.item_tower(ids, *feats) for m in model.members]
    assert joint.shape == (5, 2 * model.cfg.dim) == (5, model.cfg.out_dim)
    assert torch.allclose(joint.norm(dim=1), torch.ones(5), atol=1e-5)
    mean_cosine = sum((p * p).sum(dim=1) for p in parts) / 2
    assert torch.allclose((joint * joint).sum(dim=1), mean_cosine, atol=1e-5)


def test_members_are_bounded() -> None:
    with pytest.raises(ValueError, match="members"):
        replace(TINY, members=0).check()


@pytest.mark.parametrize("change", [{"uniform_negatives": 32}, {"target_window": 5}])
def test_uniform_negatives_and_the_target_window_train(tiny_interactions, change) -> None:
    """Both options run end to end and leave a model that scores (finite unit vectors)."""
    from two_tower.pipeline import train_in_memory

    trained = train_in_memory(tiny_interactions, params=replace(TINY, members=1, **change))
    assert trained.metadata["params"][next(iter(change))] == next(iter(change.values()))
    assert np.isfinite(trained.item_embeddings).all()
    assert np.allclose(np.linalg.norm(trained.item_embeddings, axis=1), 1.0, atol=1e-4)


def test_a_target_window_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="target_window"):
        replace(TINY, target_window=0).check()
