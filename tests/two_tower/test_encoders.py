"""The user tower's history readers: the packed seen-set pooling is the padded softmax pooling,
rows do not affect each other, empty histories stay finite, the scripted tower (what Triton runs)
equals the eager one; validation sample sizes; the early-stop log line."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from two_tower.model import TwoTower, build_two_tower
from two_tower.towers import TwoTowerConfig
from two_tower.validation import validation_split

N_ITEMS = 300


def _model(**overrides: int) -> TwoTower:
    torch.manual_seed(0)
    cfg = TwoTowerConfig(
        n_users=11,
        n_items=N_ITEMS + 1,
        n_age_buckets=4,
        n_countries=2,
        n_categories=3,
        n_price_buckets=3,
        dim=16,
        seen_pool=500,
        seen_attention=1,
        seq_layers=1,
        heads=2,
    )
    model = build_two_tower(
        replace(cfg, **overrides),
        user_vocab=np.arange(10),
        item_vocab=np.arange(N_ITEMS),
        country_vocab=np.array([7]),
    )
    assert isinstance(model, TwoTower)
    pooling = model.user_tower.seen_attention
    with torch.no_grad():  # non-zero pooling parameters, so the test is not a plain mean
        for p in pooling.parameters() if pooling is not None else []:
            p.normal_(std=0.5)
    return model.eval()


def _inputs() -> tuple[torch.Tensor, ...]:
    n = 4
    recent = torch.full((n, 20), -1)
    seen = torch.full((n, 500), -1)
    recent[0, :5], seen[0, :5] = torch.arange(5), torch.arange(5)
    recent[1], seen[1, :300] = torch.arange(20), torch.arange(300)
    seen[3, :3] = 10_000  # unknown ids only: no usable history, like row 2 (none at all)
    zeros = torch.zeros(n, dtype=torch.int64)
    return torch.arange(n), zeros, zeros, zeros, recent, seen


def test_packed_pooling_equals_padded_softmax_pooling() -> None:
    tower = _model().user_tower
    _, _, _, _, recent, seen = _inputs()
    pooling = tower.seen_attention
    index = tower._index(seen)
    keep = index > 0
    short = tower.sequence(tower.item_embedding(tower._index(recent)), tower._index(recent) > 0)
    emb = tower.item_embedding(index)
    n, length = index.shape
    query = pooling.query.unsqueeze(0) + pooling.context(short).view(n, 2, 16)
    scores = torch.einsum("nld,nhd->nhl", emb, query) * pooling.scale
    scores = scores + pooling.rank_bias(pooling.ranks[:length]).t().unsqueeze(0)
    mask = keep.unsqueeze(1)
    weights = torch.softmax(scores.masked_fill(~mask, -1e9), dim=-1) * mask
    expected = pooling.out(torch.einsum("nhl,nld->nhd", weights, emb).reshape(n, -1))
    kept = keep.nonzero()
    got = pooling(
        tower.item_embedding(index[kept[:, 0], kept[:, 1]]), kept[:, 0], kept[:, 1], short
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # the padded layout (serving batches) is the same pooling
    torch.testing.assert_close(pooling.padded(emb, keep, short), expected, rtol=1e-5, atol=1e-6)
    # an empty seen set pools to the output bias alone, in both layouts
    torch.testing.assert_close(got[2], pooling.out.bias)
    torch.testing.assert_close(pooling.padded(emb, keep, short)[2], pooling.out.bias)


@pytest.mark.parametrize("fill", [1, 10**6], ids=["packed", "padded"])
def test_the_tower_gives_the_same_vector_whichever_layout_it_picks(fill: int) -> None:
    """The tower pools padded when the batch's (rows x longest) block is mostly kept items and
    packed when it is mostly padding; both layouts give the same user vectors."""
    model = _model()
    inputs = _inputs()
    with torch.no_grad():
        default = model.user_tower(*inputs)
        model.user_tower.padded_pooling_fill = fill  # 1: packed always; 10**6: padded always
        forced = model.user_tower(*inputs)
    torch.testing.assert_close(forced, default, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*torch.jit:DeprecationWarning")  # what Triton loads
def test_rows_are_independent_finite_and_the_scripted_tower_agrees() -> None:
    model = _model()
    inputs = _inputs()
    with torch.no_grad():
        batch = model.user_tower(*inputs)
        alone = torch.cat([model.user_tower(*(x[i : i + 1] for x in inputs)) for i in range(4)])
    assert torch.isfinite(batch).all()
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batch.norm(dim=1), torch.ones(4))
    scripted = torch.jit.script(model.user_tower)
    with torch.inference_mode():
        torch.testing.assert_close(scripted(*inputs), batch, rtol=1e-5, atol=1e-6)


def test_order_matters_to_the_sequence_reader_and_gradients_stay_finite() -> None:
    model = _model()
    inputs = list(_inputs())
    with torch.no_grad():
        before = model.user_tower(*inputs)[1]
        inputs[4] = inputs[4].flip(dims=[1]).clone()
        inputs[4][0] = -1
        inputs[4][1] = torch.arange(20).flip(0)
        after = model.user_tower(*inputs)[1]
    assert not torch.allclose(before, after)  # same items, other order
    model.train()
    model.user_tower.history_dropout = 0.5
    model.user_tower(*_inputs()).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_the_mean_readers_remain_for_artifacts_without_attention() -> None:
    model = _model(seen_attention=0, seq_layers=0)
    assert model.user_tower.sequence is None and model.user_tower.seen_attention is None
    with torch.no_grad():
        assert torch.isfinite(model.user_tower(*_inputs())).all()


def _log(users: int, per_user: int = 6) -> pd.DataFrame:
    n = users * per_user
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(users), per_user),
            "item_id": np.tile(np.arange(per_user), users),
            "timestamp": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(np.arange(n), unit="s"),
        }
    )


@pytest.mark.parametrize(("users", "expected"), [(300, 300), (30_000, 3_000)])
def test_validation_takes_at_least_2000_users_or_all(users: int, expected: int) -> None:
    _, _, target = validation_split(_log(users), fraction=0.1, max_users=3_000, seed=0)
    assert target["user_id"].nunique() == expected


def test_early_stop_is_logged_only_when_training_stopped_early(
    tiny_interactions, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.two_tower.conftest import TINY
    from two_tower.pipeline import train_in_memory

    params = replace(TINY, members=1, epochs=2, patience=1)
    with caplog.at_level(logging.INFO, logger="two_tower.train"):
        train_in_memory(tiny_interactions, params=params, val_fraction=0.5)
    messages = [r.getMessage() for r in caplog.records]
    assert not any("early stop after epoch 2" in m for m in messages)
    assert any("early stop" in m or "ran all 2 epochs" in m for m in messages)


def _full_block(block: torch.nn.Module, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
    """The textbook pre-LN layer, every position computed: what the trimmed block must equal."""
    n, length, d = x.shape
    qkv = block.qkv(block.norm1(x)).view(n, length, 3, block.heads, d // block.heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    att = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attend)
    x = x + block.proj(att.transpose(1, 2).reshape(n, length, d))
    return x + block.ffn(block.norm2(x))


@pytest.mark.parametrize("layers", [1, 2])
def test_the_last_layer_computes_only_the_summary_token_and_changes_nothing(layers: int) -> None:
    encoder = _model(seq_layers=layers).user_tower.sequence
    assert encoder is not None
    torch.manual_seed(1)
    emb = torch.randn(5, 20, 16)
    keep = torch.rand(5, 20) > 0.4
    keep[2] = False  # no history: the summary token alone
    n, length, d = emb.shape
    x = torch.cat([encoder.summary.expand(n, 1, d), emb + encoder.position.unsqueeze(0)], dim=1)
    attend = torch.cat([torch.ones_like(keep[:, :1]), keep], dim=1).view(n, 1, 1, length + 1)
    for block in encoder.blocks:
        x = _full_block(block, x, attend)
    with torch.no_grad():
        torch.testing.assert_close(encoder(emb, keep), encoder.norm(x[:, 0]))
