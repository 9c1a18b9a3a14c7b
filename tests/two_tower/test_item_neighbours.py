"""The item-to-item neighbour term (``two_tower.item_neighbours``): pair counts within the window,
normalisation and top-N per item, and the TorchScript term against a plain numpy reference."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from cascade.runtime.schema import ITEM_ID, TIMESTAMP, USER_ID
from tests.two_tower.checks import assert_ranks_first
from two_tower import item_neighbours
from two_tower.artifacts import ArtifactError, load_two_tower_artifact, save_two_tower
from two_tower.item_neighbours import (
    TERM_HISTORY,
    ItemNeighbours,
    NeighbourTerm,
    build_neighbours,
)


def _log(sequences: dict[int, list[int]]) -> pd.DataFrame:
    rows = [
        (user, item, pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=step))
        for user, items in sequences.items()
        for step, item in enumerate(items)
    ]
    users, items, times = zip(*rows, strict=True)
    return pd.DataFrame({USER_ID: users, ITEM_ID: items, TIMESTAMP: list(times)})


def _reference_counts(
    sequences: dict[int, list[int]], vocab: np.ndarray, window: int
) -> np.ndarray:
    n = len(vocab)
    counts = np.zeros((n, n))
    for items in sequences.values():
        pos = np.searchsorted(vocab, items)
        for a in range(len(pos)):
            for b in range(a + 1, min(len(pos), a + window + 1)):
                w = item_neighbours.DECAY ** (b - a - 1)
                counts[pos[a], pos[b]] += w
                counts[pos[b], pos[a]] += w
    np.fill_diagonal(counts, 0)
    return counts


def test_neighbours_are_the_normalised_window_counts_strongest_first() -> None:
    rng = np.random.default_rng(0)
    vocab = np.arange(100, 130, dtype=np.int64)
    sequences = {
        u: list(rng.choice(vocab, size=int(rng.integers(2, 25)), replace=False)) for u in range(40)
    }
    got = build_neighbours(_log(sequences), vocab, window=3, per_item=5)
    counts = _reference_counts(sequences, vocab, window=3)
    n = np.array([sum(i in s for s in sequences.values()) for i in vocab], dtype=np.float64)
    norm = counts / (
        np.maximum(n, 1)[:, None] ** item_neighbours.ALPHA
        * np.maximum(n, 1)[None, :] ** (1 - item_neighbours.ALPHA)
    )
    for i in range(len(vocab)):
        kept = got.items[i][got.items[i] >= 0]
        assert len(kept) == min(5, int((norm[i] > 0).sum()))
        assert np.allclose(got.weights[i][: len(kept)], norm[i, kept])
        assert np.all(np.diff(got.weights[i][: len(kept)]) <= 1e-12)  # strongest first
        if len(kept):
            assert norm[i, kept].min() >= np.sort(norm[i])[::-1][len(kept) - 1] - 1e-12
    got.check(len(vocab))


def test_blocks_give_the_same_tables_as_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    vocab = np.arange(50, dtype=np.int64)
    sequences = {u: list(rng.choice(vocab, size=20, replace=False)) for u in range(30)}
    one = build_neighbours(_log(sequences), vocab)
    monkeypatch.setattr(item_neighbours, "PAIRS_PER_BLOCK", 1_000)  # many source blocks
    many = build_neighbours(_log(sequences), vocab)
    assert np.array_equal(one.items, many.items)
    assert np.allclose(one.weights, many.weights)


def test_users_are_never_linked_across_and_unknown_items_are_ignored() -> None:
    vocab = np.array([1, 2, 3], dtype=np.int64)
    got = build_neighbours(_log({7: [1, 99], 8: [2, 3]}), vocab, per_item=2)
    assert got.items[0].tolist() == [-1, -1]  # 1 was followed only by 99, not in the vocabulary
    assert got.items[1].tolist() == [2, -1] and got.items[2].tolist() == [1, -1]


def test_the_term_matches_a_numpy_reference_and_scripts() -> None:
    rng = np.random.default_rng(2)
    item_ids = np.array([10, 20, 30, 40, 50], dtype=np.int64)
    table = ItemNeighbours(
        items=np.array([[1, 2], [0, -1], [3, 4], [-1, -1], [0, 3]], dtype=np.int64),
        weights=rng.random((5, 2)).astype(np.float32),
    )
    table.weights[table.items < 0] = 0
    seen = torch.tensor([[30, 10, 77, -1], [-1, -1, -1, -1], [50, 20, 40, 10]])
    term = NeighbourTerm(item_ids, table, gamma=0.5)
    got = term(seen)
    for row, ids in enumerate(seen.tolist()):
        want = np.zeros(5)
        for rank, item in enumerate(ids):
            if item in item_ids:
                i = int(np.searchsorted(item_ids, item))
                for j, w in zip(table.items[i], table.weights[i], strict=True):
                    if j >= 0:
                        want[j] += w / (1 + rank)
        want = 0.5 * want / want.max() if want.max() > 0 else want
        assert np.allclose(got[row].numpy(), want, atol=1e-6)
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.13; Triton loads it
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        scripted = torch.jit.script(term)
    assert torch.equal(scripted(seen), got)


def test_the_term_reads_only_the_newest_history() -> None:
    item_ids = np.arange(3, dtype=np.int64)
    table = ItemNeighbours(
        items=np.array([[1], [2], [0]], dtype=np.int64),
        weights=np.ones((3, 1), dtype=np.float32),
    )
    term = NeighbourTerm(item_ids, table, gamma=1.0)
    old = torch.full((1, TERM_HISTORY + 5), -1, dtype=torch.int64)
    old[0, TERM_HISTORY:] = 1  # item 1 only past the newest TERM_HISTORY: not read
    assert float(term(old).abs().sum()) == 0.0
    old[0, TERM_HISTORY - 1] = 0  # item 0 at the last rank read: its neighbour 1 scores
    assert term(old)[0].tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("items", "weights", "message"),
    [
        (np.array([[5]]), np.array([[1.0]]), "outside"),
        (np.array([[0]]), np.array([[np.nan]]), "finite"),
        (np.zeros((2, 1), np.int64), np.zeros((2, 1)), "hold 2 items"),
    ],
)
def test_bad_tables_are_refused(items: np.ndarray, weights: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ItemNeighbours(items, weights.astype(np.float32)).check(1)


def test_training_with_validation_chooses_gamma_with_beta(tiny_interactions) -> None:
    from tests.two_tower.conftest import TINY
    from two_tower.item_prior import BETA_GRID
    from two_tower.pipeline import train_in_memory

    trained = train_in_memory(
        tiny_interactions, params=dataclasses.replace(TINY, members=1, epochs=1), val_fraction=0.5
    )
    chosen = trained.metadata["neighbours"]
    assert chosen["gamma"] in item_neighbours.GAMMA_GRID
    assert set(chosen["validation_recall@20"]) == {str(g) for g in item_neighbours.GAMMA_GRID}
    assert set(trained.metadata["prior"]["validation_recall@20"]) == {str(b) for b in BETA_GRID}
    assert (trained.neighbour_term() is None) == (chosen["gamma"] == 0.0)


def test_the_artifact_carries_the_term_and_the_recommender_adds_it(
    tiny_trained, tiny_interactions, tmp_path
) -> None:
    n = len(tiny_trained.item_ids)
    table = ItemNeighbours(np.full((n, 2), -1, np.int64), np.zeros((n, 2), np.float32))
    table.items[:, 0], table.weights[:, 0] = 3, 1.0  # every item points at item 3
    table.items[3, 0], table.weights[3, 0] = -1, 0.0
    trained = dataclasses.replace(tiny_trained, neighbours=table, neighbour_gamma=100.0)
    trained.metadata = {**tiny_trained.metadata, "neighbours": {"gamma": 100.0}}
    folder = save_two_tower(trained, artifacts_dir=tmp_path)
    loaded = load_two_tower_artifact(folder)
    assert loaded.neighbour_gamma == 100.0 and loaded.neighbours is not None
    np.testing.assert_array_equal(loaded.neighbours.items, table.items)
    assert_ranks_first(loaded, tiny_interactions, int(tiny_trained.item_ids[3]))
    np.save(folder / "neighbour_items.npy", np.full_like(table.items, n), allow_pickle=False)
    with pytest.raises(ArtifactError, match="outside the item vocabulary"):
        load_two_tower_artifact(folder)
