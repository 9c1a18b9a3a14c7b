"""The item-to-item term of the primary's scores: what users took near the items this user saw.

Why: a user tower compresses the whole history into one 128-d direction, and a single direction
cannot name "the few items that follow each of the 40 items I saw" (issue 14: the tower, like
ALS, a low-rank model, stayed level with ALS while EASE, a full-rank item-item model, was 1.09x
it). This term is full rank and cheap: every item keeps its ``PER_ITEM`` strongest neighbours,
learned from the training log, and a user's term sums the neighbours of their seen items.

- **Neighbours** (:func:`build_neighbours`): in each user's time-ordered training log, items
  ``d`` steps apart (``d <= WINDOW``) count ``DECAY ** (d - 1)`` for each other, in both
  directions (sessions and item-to-item sequences put related items close together; the whole
  history at once would count every pair of a heavy user's hundreds of items). A count
  ``c(i, j)`` becomes ``c(i, j) / (n_i ** ALPHA * n_j ** (1 - ALPHA))`` (``n`` the items'
  interactions; mostly "how often j follows i, per i", a little less for very popular ``j``)
  and each item keeps its ``PER_ITEM`` largest.
- **A user's term** (:class:`NeighbourTerm`): ``sum over seen items i of w(r_i) * S[i, :]``
  over the newest ``TERM_HISTORY`` (100) seen items, ``r_i`` the item's recency rank in
  ``seen_items`` (0 = newest) and ``w(r) = 1 / (1 + r)``,
  divided by its largest value (so it lies in [0, 1] whatever the history's length) and
  multiplied by ``gamma``, chosen with the popularity prior's beta on validation
  (:data:`GAMMA_GRID`, 0 included: data where the term does not help keep the plain scores).

The term is a TorchScript module: the offline recommender adds it, and the export saves it as
``item_neighbours.pt`` for the Triton model to load and add, so both rank alike from the same
code. Its input is what the online store holds (``seen_items``, newest first, -1 padding).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from cascade.runtime.schema import ITEM_ID, TIMESTAMP, USER_ID

logger = logging.getLogger(__name__)

WINDOW = 10  # items this many steps apart in a user's log still count for each other
DECAY = 0.7  # weight of a pair d steps apart: DECAY ** (d - 1)
ALPHA = 0.8  # normalisation c / (n_i ** ALPHA * n_j ** (1 - ALPHA))
PER_ITEM = 50  # neighbours kept per item
# Newest seen items a user's term reads. Item r of the history counts 1/(1+r), so each item past
# 100 adds under 1%; reading all 500 the store holds cost 3.6x the CPU at batch 32 for 0.0004
# test Recall@20 on the demo (term alone, both profiles).
TERM_HISTORY = 100
GAMMA_GRID = (0.0, 0.1, 0.2, 0.4, 0.8, 1.6)
PAIRS_PER_BLOCK = 20_000_000  # bounds the memory of one accumulation step


@dataclass
class ItemNeighbours:
    """Each item's strongest neighbours: ``items`` (n_items, PER_ITEM) int64 positions in the
    item vocabulary, -1 pads; ``weights`` float32, 0 where padded."""

    items: np.ndarray
    weights: np.ndarray

    def check(self, n_items: int) -> None:
        """Raise ValueError unless the tables fit a vocabulary of ``n_items``."""
        if self.items.ndim != 2 or self.items.shape != self.weights.shape:
            raise ValueError(f"neighbour tables of shapes {self.items.shape}/{self.weights.shape}")
        if self.items.shape[0] != n_items:
            raise ValueError(f"neighbour tables hold {self.items.shape[0]} items, not {n_items}")
        if ((self.items < -1) | (self.items >= n_items)).any():
            raise ValueError("neighbour ids outside the item vocabulary")
        if not np.isfinite(self.weights).all() or (self.weights < 0).any():
            raise ValueError("neighbour weights are not finite and >= 0")


def build_neighbours(
    interactions: pd.DataFrame,
    item_vocab: np.ndarray,
    *,
    window: int = WINDOW,
    per_item: int = PER_ITEM,
) -> ItemNeighbours:
    """The neighbour tables of ``item_vocab`` from ``interactions`` (see the module docstring).

    Vectorised: one pass per distance ``d``, pair counts summed as sparse matrices, a block of
    source items at a time when the pairs are many, so memory stays bounded on large logs.
    """
    started = time.perf_counter()
    n_items = len(item_vocab)
    ordered = interactions.sort_values([USER_ID, TIMESTAMP, ITEM_ID], kind="mergesort")
    users = ordered[USER_ID].to_numpy(np.int64)
    raw = ordered[ITEM_ID].to_numpy(np.int64)
    pos = np.searchsorted(item_vocab, raw).clip(max=max(n_items - 1, 0))
    known = (item_vocab[pos] == raw) if n_items else np.zeros(len(raw), bool)
    users, pos = users[known], pos[known].astype(np.int32)  # half the memory traffic of int64
    counts = np.bincount(pos, minlength=n_items).astype(np.float64)
    items = np.full((n_items, per_item), -1, dtype=np.int64)
    weights = np.zeros((n_items, per_item), dtype=np.float32)
    if n_items == 0 or len(pos) < 2:
        return ItemNeighbours(items, weights)
    n_blocks = max(1, -(-2 * len(pos) * window // PAIRS_PER_BLOCK))
    bounds = np.linspace(0, n_items, n_blocks + 1).astype(np.int64)
    for lo, hi in itertools.pairwise(bounds):
        block = _pair_counts(users, pos, n_items, lo, hi, window)
        _keep_strongest(block, counts, lo, items, weights)
    logger.info(
        "item-neighbour tables: %d items from %d interactions in %.1f s (%d blocks)",
        n_items,
        len(pos),
        time.perf_counter() - started,
        n_blocks,
    )
    return ItemNeighbours(items, weights)


def _pair_counts(
    users: np.ndarray, pos: np.ndarray, n_items: int, lo: int, hi: int, window: int
) -> sp.csr_matrix:
    """``(hi - lo, n_items)`` decayed pair counts of the source items ``lo <= i < hi``."""
    src, dst, value = [], [], []
    for d in range(1, window + 1):
        same = users[:-d] == users[d:]
        a, b = pos[:-d][same], pos[d:][same]
        for s, t in ((a, b), (b, a)):
            inside = (s >= lo) & (s < hi)
            src.append(s[inside] - lo)
            dst.append(t[inside])
            value.append(np.full(len(src[-1]), DECAY ** (d - 1)))
    # One matrix per block (its conversion sums the duplicate pairs): adding one per distance
    # rebuilt the growing block ten times.
    return sp.coo_matrix(
        (np.concatenate(value), (np.concatenate(src), np.concatenate(dst))),
        shape=(hi - lo, n_items),
    ).tocsr()


def _keep_strongest(
    block: sp.csr_matrix, counts: np.ndarray, lo: int, items: np.ndarray, weights: np.ndarray
) -> None:
    """Normalise ``block``'s counts and write each row's ``PER_ITEM`` largest into the tables."""
    block.sum_duplicates()  # canonical: by source, then neighbour id
    coo = block.tocoo()
    src, dst = coo.row.astype(np.int64), coo.col.astype(np.int64)
    keep = src + lo != dst  # an item is not its own neighbour
    src, dst = src[keep], dst[keep]
    value = coo.data[keep] / (
        np.maximum(counts[src + lo], 1) ** ALPHA * np.maximum(counts[dst], 1) ** (1 - ALPHA)
    )
    # By source, strongest first, ties by id: one stable sort of source + a [0, 0.5) fraction
    # falling with the value relative to the row's largest (a 3-key lexsort was half the build).
    peak = np.zeros(block.shape[0])
    np.maximum.at(peak, src, value)
    order = np.argsort(src + 0.5 * (1.0 - value / peak[src]), kind="stable")
    src, dst, value = src[order], dst[order], value[order]
    first = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=block.shape[0]))])[src]
    rank = np.arange(len(src)) - first
    top = rank < items.shape[1]
    items[src[top] + lo, rank[top]] = dst[top]
    weights[src[top] + lo, rank[top]] = value[top]


class NeighbourTerm(nn.Module):
    """``gamma`` x a user's neighbour scores scaled to [0, 1]; raw seen ids in, (n, n_items) out.

    TorchScript-able: the Triton model loads it from ``item_neighbours.pt``.
    """

    def __init__(self, item_ids: np.ndarray, neighbours: ItemNeighbours, gamma: float) -> None:
        super().__init__()
        n_items = len(item_ids)
        neighbours.check(n_items)
        # A padded neighbour points at column n_items, which forward drops.
        table = np.where(neighbours.items < 0, n_items, neighbours.items)
        self.register_buffer("item_ids", torch.from_numpy(np.asarray(item_ids, np.int64)))
        self.register_buffer("neighbours", torch.from_numpy(table.astype(np.int64)))
        self.register_buffer("weights", torch.from_numpy(neighbours.weights.astype(np.float32)))
        self.gamma = float(gamma)
        self.history = TERM_HISTORY

    def forward(self, seen_items: Tensor) -> Tensor:
        # Buffers read as Tensor | Module to mypy; TorchScript cannot read class annotations here.
        item_ids: Tensor = self.item_ids  # type: ignore[assignment]
        neighbours: Tensor = self.neighbours  # type: ignore[assignment]
        weights: Tensor = self.weights  # type: ignore[assignment]
        n_items = item_ids.numel()
        rows = seen_items.shape[0]
        seen_items = seen_items[:, : self.history].contiguous()
        pos = torch.searchsorted(item_ids, seen_items.clamp(min=0)).clamp(max=n_items - 1)
        known = (seen_items >= 0) & (item_ids[pos] == seen_items)
        # Only the known items are gathered (a padded (rows, 500, PER_ITEM) block was 5x the
        # work on demo, where the mean history is ~40 items).
        where = known.nonzero()
        row, rank = where[:, 0], where[:, 1]
        item = pos[row, rank]
        recency = 1.0 / (1.0 + rank.to(torch.float32))  # rank 0 = newest: counts most
        contrib = weights[item] * recency.unsqueeze(1)  # (known items, PER_ITEM)
        target = row.unsqueeze(1) * (n_items + 1) + neighbours[item]
        out = torch.zeros(rows * (n_items + 1), dtype=torch.float32, device=seen_items.device)
        out.index_add_(0, target.reshape(-1), contrib.reshape(-1))
        scores = out.view(rows, n_items + 1)[:, :n_items]
        peak = scores.amax(dim=1, keepdim=True).clamp(min=1e-12)
        return scores * (self.gamma / peak)


def metadata(gamma: float, recalls: dict[str, Any]) -> dict[str, Any]:
    """What ``metadata.json`` records about the term (``neighbours``)."""
    return {
        "gamma": gamma,
        "window": WINDOW,
        "decay": DECAY,
        "alpha": ALPHA,
        "per_item": PER_ITEM,
        "validation_recall@20": recalls,
    }
