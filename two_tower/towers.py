# mypy: disable-error-code="arg-type"
# (registered buffers read as "Tensor | Module"; TorchScript parses "# type:" comments, so no inline ignores)
"""The two towers of the network and the encoding of their inputs; :mod:`two_tower.model` joins them.

Both towers take the data set's own ids and raw feature values and do their own lookups
(``searchsorted`` over sorted id vocabularies held as buffers), so the scripted user tower that
Triton runs needs nothing but the tensors of the wire contract. The country arrives as its int64
code (``two_tower.contract.country_code``) and is looked up the same way. Item categories are
mapped to indices outside the network with :class:`StringVocab` (the item tower only runs
offline). Index 0 is "unknown" everywhere.

User tower: user id embedding (row 0 = out-of-vocabulary), age bucket, country, log2-bucketed
interaction count, and two readers of the history (:mod:`two_tower.encoders`), both over the item
tower's id embedding: the recent items in order (``seq_layers`` self-attention layers with learned
positions; 0: their mean) for the short-term taste, and the newest ``seen_pool`` distinct seen
items (up to the 500 the online store holds; attention pooling queried by the sequence vector
when ``seen_attention``, else their mean) for the long-term taste; through a two-layer MLP plus
a linear skip. Lists are right-padded, so each batch is cut to its longest list first.
Item tower: item id embedding, category, price bucket, log2-bucketed popularity and age.
Both emit L2-normalised vectors, scored by dot product.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from two_tower.contract import RECENT_ITEMS_LEN
from two_tower.encoders import RecentSequenceEncoder, SeenSetPooling

COUNT_BUCKETS = 24  # log2 buckets: counts up to ~16M
AGE_DAYS_BUCKETS = 16
# Seen-set pooling runs padded when at least 1/this of the batch's (rows x longest) block holds
# kept items, else packed (SeenSetPooling.padded). Measured (one thread, dim 128): padded took
# 0.11-0.55x the packed time at fill 0.5-1 (serving batches of 1-128 users with 20-500 seen
# items each), 0.8x at fill 0.25, but 2-3x at fill 0.1 (a training batch on demo).
PADDED_POOLING_FILL = 5


@dataclass(frozen=True)
class TwoTowerConfig:
    """Sizes of the network. Vocabulary sizes include the unknown row 0."""

    n_users: int
    n_items: int
    n_age_buckets: int
    n_countries: int
    n_categories: int
    n_price_buckets: int
    dim: int = 64
    hidden: int = 128
    side_dim: int = 16
    seen_pool: int = 0  # newest seen items pooled into the user tower (0: off)
    seen_attention: int = 0  # 1: attention pooling of the seen set (SeenSetPooling); 0: mean
    seq_layers: int = 0  # self-attention layers over the recent items; 0: their mean
    heads: int = 2  # attention heads of both readers
    user_id_embedding: int = 1  # 0: no per-user parameters (features and history only)
    members: int = 1  # independently trained towers averaged (see TowerEnsemble)

    def to_dict(self) -> dict[str, int]:
        """JSON-safe form, stored in ``metadata.json``."""
        return asdict(self)

    @property
    def out_dim(self) -> int:
        """Length of the vectors the towers emit (members side by side)."""
        return self.dim * self.members

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TwoTowerConfig:
        return cls(**{k: int(v) for k, v in data.items()})


class StringVocab:
    """Strings to indices 1..n in sorted order; anything else (missing, unseen) maps to 0."""

    def __init__(self, values: Iterable[str]) -> None:
        self.values: list[str] = sorted({str(v) for v in values if v is not None and v == v})
        self._index = {v: i + 1 for i, v in enumerate(self.values)}

    def __len__(self) -> int:
        return len(self.values) + 1

    def encode(self, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Indices (int64) of ``values``; bytes are decoded as UTF-8."""
        out = np.zeros(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            key = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            out[i] = self._index.get(key, 0) if isinstance(key, str) else 0
        return out


def lookup(vocab: Tensor, ids: Tensor) -> Tensor:
    """Index 1..n of each id in the sorted ``vocab``; 0 for ids not in it (padding included)."""
    if vocab.numel() == 0:
        return torch.zeros_like(ids)
    pos = torch.searchsorted(vocab, ids).clamp(max=vocab.numel() - 1)
    return torch.where(vocab[pos] == ids, pos + 1, torch.zeros_like(pos))


def log2_bucket(values: Tensor, n_buckets: int) -> Tensor:
    """floor(log2(x + 1)) clipped to ``[0, n_buckets - 1]``; negatives count as 0."""
    x = values.to(torch.float32).clamp(min=0.0)
    return torch.floor(torch.log2(x + 1.0)).to(torch.int64).clamp(0, n_buckets - 1)


def _bucket(values: Tensor, n_rows: int) -> Tensor:
    """Small non-negative categorical ints to rows 1..n_rows-1; missing (<0) and overflow to 0."""
    v = values.to(torch.int64) + 1
    return torch.where((v >= 1) & (v < n_rows), v, torch.zeros_like(v))


class UserTower(nn.Module):
    """User features to an L2-normalised vector. Scripted as-is for Triton."""

    def __init__(
        self,
        cfg: TwoTowerConfig,
        user_vocab: Tensor,
        item_vocab: Tensor,
        country_vocab: Tensor,
        item_embedding: nn.Embedding,
    ) -> None:
        super().__init__()
        self.register_buffer("user_vocab", user_vocab.to(torch.int64))
        self.register_buffer("item_vocab", item_vocab.to(torch.int64))
        self.register_buffer("country_vocab", country_vocab.to(torch.int64))
        self.user_embedding = nn.Embedding(cfg.n_users, cfg.dim)
        self.item_embedding = item_embedding
        self.age = nn.Embedding(cfg.n_age_buckets, cfg.side_dim)
        self.country = nn.Embedding(cfg.n_countries, cfg.side_dim)
        self.count = nn.Embedding(COUNT_BUCKETS, cfg.side_dim)
        self.seen_pool = cfg.seen_pool
        self.sequence = (
            RecentSequenceEncoder(cfg.dim, RECENT_ITEMS_LEN, cfg.seq_layers, cfg.heads)
            if cfg.seq_layers > 0
            else None
        )
        self.seen_attention = (
            SeenSetPooling(cfg.dim, cfg.heads, cfg.seen_pool)
            if cfg.seen_attention and cfg.seen_pool
            else None
        )
        self.use_user_id = bool(cfg.user_id_embedding)
        self.padded_pooling_fill = PADDED_POOLING_FILL  # an attribute: TorchScript reads no globals
        width = 3 * cfg.dim + 3 * cfg.side_dim
        self.mlp = nn.Sequential(
            nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.dim)
        )
        self.skip = nn.Linear(width, cfg.dim, bias=False)
        self.n_age_buckets = cfg.n_age_buckets
        self.count_buckets = COUNT_BUCKETS
        # Training only: the share of history items hidden from the pooling, per row and step.
        # Rows of one user-week share the same snapshot, so an exact history is an id in
        # disguise that the MLP memorises; hiding items makes it learn from the taste instead.
        self.history_dropout = 0.0

    def forward(
        self,
        user_id: Tensor,
        age_bucket: Tensor,
        country: Tensor,
        interaction_count: Tensor,
        recent_items: Tensor,
        seen_items: Tensor,
    ) -> Tensor:
        """``(n,)`` ids and features (country as its code), ``(n, L)`` item lists -> ``(n, dim)``."""
        users = lookup(self.user_vocab, user_id)
        if not self.use_user_id:
            users = torch.zeros_like(users)
        recent_index = self._index(recent_items)
        recent_keep = self._keep(recent_index)
        recent_emb = self.item_embedding(recent_index)
        sequence = self.sequence
        if sequence is not None:
            short = sequence(recent_emb, recent_keep)
        else:
            short = _masked_mean(recent_emb, recent_keep)
        seen_index = self._index(seen_items[:, : self.seen_pool])
        seen_keep = self._keep(seen_index)
        pooling = self.seen_attention
        if pooling is not None:
            kept = seen_keep.nonzero()  # (row, rank) of every kept item
            if kept.shape[0] * self.padded_pooling_fill >= seen_keep.numel():
                long = pooling.padded(self.item_embedding(seen_index), seen_keep, short)
            else:  # mostly padding (a few long histories among short ones): packed
                rows, ranks = kept[:, 0], kept[:, 1]
                long = pooling(self.item_embedding(seen_index[rows, ranks]), rows, ranks, short)
        else:
            long = _masked_mean(self.item_embedding(seen_index), seen_keep)
        x = torch.cat(
            [
                self.user_embedding(users),
                short,
                long,
                self.age(_bucket(age_bucket, self.n_age_buckets)),
                self.country(lookup(self.country_vocab, country)),
                self.count(log2_bucket(interaction_count, self.count_buckets)),
            ],
            dim=1,
        )
        return F.normalize(self.mlp(x) + self.skip(x), dim=-1)

    def _index(self, items: Tensor) -> Tensor:
        """Vocabulary indices of a right-padded list, cut to the batch's longest list (>= 1)."""
        longest = int((items >= 0).sum(dim=1).max()) if items.shape[0] > 0 else 0
        return lookup(self.item_vocab, items[:, : max(longest, 1)].contiguous())

    def _keep(self, index: Tensor) -> Tensor:
        """Known items, less the ones history dropout hides in training."""
        keep = index > 0
        if self.training and self.history_dropout > 0.0:
            keep = keep & (torch.rand(index.shape, device=index.device) >= self.history_dropout)
        return keep


def _masked_mean(emb: Tensor, keep: Tensor) -> Tensor:
    """Mean of the kept rows of ``emb`` (n, L, d) per row; zeros for none."""
    mask = keep.to(emb.dtype).unsqueeze(-1)
    pooled: Tensor = (emb * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return pooled


class ItemTower(nn.Module):
    """Item features to an L2-normalised vector."""

    def __init__(
        self, cfg: TwoTowerConfig, item_vocab: Tensor, item_embedding: nn.Embedding
    ) -> None:
        super().__init__()
        self.register_buffer("item_vocab", item_vocab.to(torch.int64))
        self.item_embedding = item_embedding
        self.category = nn.Embedding(cfg.n_categories, cfg.side_dim)
        self.price = nn.Embedding(cfg.n_price_buckets, cfg.side_dim)
        self.popularity = nn.Embedding(COUNT_BUCKETS, cfg.side_dim)
        self.age = nn.Embedding(AGE_DAYS_BUCKETS, cfg.side_dim)
        width = cfg.dim + 4 * cfg.side_dim
        self.mlp = nn.Sequential(
            nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.dim)
        )
        self.skip = nn.Linear(width, cfg.dim, bias=False)
        self.n_price_buckets = cfg.n_price_buckets
        self.count_buckets = COUNT_BUCKETS
        self.age_buckets = AGE_DAYS_BUCKETS

    def forward(
        self,
        item_id: Tensor,
        category: Tensor,
        price_bucket: Tensor,
        popularity: Tensor,
        age_days: Tensor,
    ) -> Tensor:
        """``(n,)`` ids and features (category as a StringVocab index) -> ``(n, dim)``."""
        x = torch.cat(
            [
                self.item_embedding(lookup(self.item_vocab, item_id)),
                self.category(category.clamp(min=0)),
                self.price(_bucket(price_bucket, self.n_price_buckets)),
                self.popularity(log2_bucket(popularity, self.count_buckets)),
                self.age(log2_bucket(age_days, self.age_buckets)),
            ],
            dim=1,
        )
        return F.normalize(self.mlp(x) + self.skip(x), dim=-1)
