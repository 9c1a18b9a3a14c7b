# mypy: disable-error-code="arg-type, index"
# (registered buffers read as "Tensor | Module"; TorchScript parses "# type:" comments)
"""The user tower's two readers of the history: the whole seen set, and the order of the newest items.

Both read item-id embeddings that the item tower shares, skip padding, unknown ids and, in
training, items hidden by history dropout, and give a finite vector for a row with no history at
all (the sequence always has its summary token; an empty seen set pools to zeros).

- :class:`SeenSetPooling`: learned-weight attention pooling over the user's seen set, up to
  ``MAX_SEEN_ITEMS`` (500) distinct items, newest first as the online store holds them. Each head
  scores an item by its embedding against a query (a learned vector plus a projection of the
  sequence summary, so the recent session can pick which part of a long history matters), plus a
  learned bias per log2 bucket of its recency rank; a softmax over the row's items weighs them.
  With a zero query and zero biases it is the plain mean (asymmetric-MF style pooling).
- :class:`RecentSequenceEncoder`: pre-LN Transformer layers over the ``RECENT_ITEMS_LEN`` newest
  events (repeats kept), with learned position embeddings (position 0 = newest) and a learned
  summary token that every row has, so a row with an empty history still attends to something;
  the summary token's output is the sequence vector.

No time gaps: the online store keeps item ids only, not when each item was seen, so the serving
path could not feed them (the tower sees order, not elapsed time).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MASKED = -1.0e9  # where the running max of a row's scores starts (below any real score)
RANK_BUCKETS = 10  # log2 buckets of a seen item's recency rank: 0, 1, 2-3, ..., 256-511


def _rank_buckets(length: int) -> Tensor:
    ranks = torch.arange(length, dtype=torch.float32)
    return torch.floor(torch.log2(ranks + 1.0)).to(torch.int64).clamp(0, RANK_BUCKETS - 1)


class SeenSetPooling(nn.Module):
    """Multi-head learned-weight pooling of the seen set (see the module docstring)."""

    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.register_buffer("ranks", _rank_buckets(max_len), persistent=False)
        self.masked = MASKED
        self.heads = heads
        self.dim = dim
        self.query = nn.Parameter(torch.zeros(heads, dim))
        self.context = nn.Linear(dim, heads * dim, bias=False)
        nn.init.zeros_(self.context.weight)
        self.rank_bias = nn.Embedding(RANK_BUCKETS, heads)
        nn.init.zeros_(self.rank_bias.weight)
        self.out = nn.Linear(heads * dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, emb: Tensor, rows: Tensor, ranks: Tensor, context: Tensor) -> Tensor:
        """The seen set packed, without padding: ``emb`` (M, d) the embeddings of all rows' kept
        items, ``rows`` (M,) the row of each, ``ranks`` (M,) its recency rank (0 = newest);
        ``context`` (n, d) the rows' sequence vectors -> (n, d); zeros in for an empty row.

        Packed because histories are short on average and the longest in a batch is long
        (demo: 48 items per training row on average, 500 at most): a padded (n, 500, d) tensor
        was ten times the work."""
        n = context.shape[0]
        query = self.query.unsqueeze(0) + self.context(context).view(n, self.heads, self.dim)
        scores = (emb.unsqueeze(1) * query[rows]).sum(dim=-1) * self.scale
        scores = scores + self.rank_bias(self.ranks[ranks])  # (M, heads)
        # softmax within each row: shift by the row's max (a constant per row, so detached)
        by_row = rows.unsqueeze(1).expand(-1, self.heads)
        top = torch.full((n, self.heads), self.masked, dtype=scores.dtype, device=scores.device)
        top = top.scatter_reduce(0, by_row, scores.detach(), reduce="amax")
        exp = torch.exp(scores - top[rows])
        total = torch.zeros_like(top).index_add(0, rows, exp)
        weights = exp / total[rows]
        pooled = torch.zeros(n, self.heads, self.dim, dtype=emb.dtype, device=emb.device)
        pooled = pooled.index_add(0, rows, weights.unsqueeze(-1) * emb.unsqueeze(1))
        out: Tensor = self.out(pooled.reshape(n, self.heads * self.dim))
        return out

    def padded(self, emb: Tensor, keep: Tensor, context: Tensor) -> Tensor:
        """The same pooling over a right-padded seen set: ``emb`` (n, L, d) with ``keep`` (n, L)
        bool, an item's recency rank its column; ``context`` (n, d) -> (n, d).

        Two batched matrix products instead of the packed form's (M, heads, d) intermediates
        and scatters: the faster layout when padding is a small share of the (n, L) block, as
        in a serving batch (``UserTower`` picks the layout per batch; a test holds them equal)."""
        n, length, _ = emb.shape
        query = self.query.unsqueeze(0) + self.context(context).view(n, self.heads, self.dim)
        scores = torch.bmm(emb, query.transpose(1, 2)) * self.scale  # (n, L, heads)
        scores = scores + self.rank_bias(self.ranks[:length]).unsqueeze(0)
        mask = keep.unsqueeze(-1)
        # masked entries weigh exactly 0; a row with none kept pools to zeros, as packed
        weights = torch.softmax(scores.masked_fill(~mask, self.masked), dim=1) * mask
        pooled = torch.bmm(weights.transpose(1, 2), emb)  # (n, heads, d)
        out: Tensor = self.out(pooled.reshape(n, self.heads * self.dim))
        return out


class _Block(nn.Module):
    """One pre-LN Transformer encoder layer (self-attention + feed-forward), padding masked."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor, attend: Tensor, queries: int) -> Tensor:
        """``x`` (n, L, d); ``attend`` (n, 1, 1, L) bool, True where a key may be attended;
        the outputs of the first ``queries`` positions -> (n, queries, d).

        Every position is a key and a value, but only the first ``queries`` are computed past
        the attention: the last layer needs the summary token alone, and its query, output
        projection and feed-forward were ~70% of the encoder's multiply-adds for the rest."""
        n, length, d = x.shape
        h = self.norm1(x)
        w_q, w_kv = self.qkv.weight[:d], self.qkv.weight[d:]
        b_q, b_kv = self.qkv.bias[:d], self.qkv.bias[d:]
        head = d // self.heads
        q = F.linear(h[:, :queries], w_q, b_q).view(n, queries, self.heads, head).transpose(1, 2)
        kv = F.linear(h, w_kv, b_kv).view(n, length, 2, self.heads, head)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
        y = x[:, :queries] + self.proj(att.transpose(1, 2).reshape(n, queries, d))
        out: Tensor = y + self.ffn(self.norm2(y))
        return out


class RecentSequenceEncoder(nn.Module):
    """Self-attention over the newest items with learned positions (see the module docstring)."""

    def __init__(self, dim: int, length: int, layers: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.position = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.summary = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, emb: Tensor, keep: Tensor) -> Tensor:
        """``emb`` (n, L, d) newest first, ``keep`` (n, L) bool -> (n, d)."""
        n, length, d = emb.shape
        x = emb + self.position[:length].unsqueeze(0)
        x = torch.cat([self.summary.expand(n, 1, d), x], dim=1)
        attend = torch.cat([torch.ones_like(keep[:, :1]), keep], dim=1).view(n, 1, 1, length + 1)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, attend, 1 if i == last else length + 1)
        out: Tensor = self.norm(x[:, 0])
        return out
