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
interaction count, the mean of the item-id embeddings of the recent items (short-term taste) and
of the newest ``seen_pool`` seen items (long-term taste, in the spirit of asymmetric matrix
factorisation), both sharing the item tower's id embedding, through a two-layer MLP plus a
linear skip.
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

COUNT_BUCKETS = 24  # log2 buckets: counts up to ~16M
AGE_DAYS_BUCKETS = 16


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
    seen_pool: int = 0  # newest seen items mean-pooled into the user tower (0: off)
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
        self.use_user_id = bool(cfg.user_id_embedding)
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
        x = torch.cat(
            [
                self.user_embedding(users),
                self._pool(recent_items),
                self._pool(seen_items[:, : self.seen_pool]),
                self.age(_bucket(age_bucket, self.n_age_buckets)),
                self.country(lookup(self.country_vocab, country)),
                self.count(log2_bucket(interaction_count, self.count_buckets)),
            ],
            dim=1,
        )
        return F.normalize(self.mlp(x) + self.skip(x), dim=-1)

    def _pool(self, items: Tensor) -> Tensor:
        """Mean item-id embedding of the known items in each row (zeros for none)."""
        index = lookup(self.item_vocab, items.contiguous())
        keep = index > 0
        if self.training and self.history_dropout > 0.0:
            keep = keep & (torch.rand(index.shape, device=index.device) >= self.history_dropout)
        mask = keep.to(torch.float32).unsqueeze(-1)
        pooled: Tensor = (self.item_embedding(index) * mask).sum(dim=1) / mask.sum(dim=1).clamp(
            min=1.0
        )
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
