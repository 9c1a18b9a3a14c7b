"""The Two-Tower training loop: in-batch sampled softmax with log-Q correction, early stopping.

Loss, per batch of B (user, positive item) rows (Yi et al. 2019, "Sampling-bias-corrected
neural modeling"): ``logits[i, j] = <u_i, v_j> / T - log(B * p_j)`` where ``p_j`` is item j's
share of the training rows, so popular items are not over-punished for appearing as negatives
more often; other rows holding the same item as row i are masked out of row i. Optional extra
negatives are drawn uniformly from the catalogue (correction ``log(M / N)``), "mixed negative
sampling" (Yang et al. 2020). Cross-entropy against the diagonal.

Deterministic on CPU for a seed: seeded init, a seeded permutation per epoch, deterministic
algorithms, a fixed thread count. Runs on CUDA when available (``device="auto"``). Under
``torchrun`` the same loop runs DistributedDataParallel (see ``two_tower.ddp``).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from two_tower.allocator import keep_freed_memory
from two_tower.contract import MAX_SEEN_ITEMS
from two_tower.data import ItemRows, TrainingSet
from two_tower.model import TwoTower

logger = logging.getLogger(__name__)
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters and run settings (defaults tuned on ``demo``, see the README)."""

    dim: int = 128
    hidden: int = 128
    side_dim: int = 16
    seen_pool: int = 500  # newest distinct seen items the user tower pools (0: off)
    seen_attention: bool = True  # attention pooling of the seen set (False: their mean)
    seq_layers: int = 1  # self-attention layers over the recent items (0: their mean)
    heads: int = 2  # attention heads of the seen-set pooling and the sequence encoder
    members: int = 1  # towers trained and averaged (TowerEnsemble); 1: a single tower
    user_id_embedding: bool = False  # demo Recall@20 0.2233 with it, 0.2356 without (it memorises)
    epochs: int = 20
    batch_size: int = 1024
    lr: float = 0.004
    lr_schedule: str = "constant"  # or "cosine": from lr down to 1% of it over all planned steps
    weight_decay: float = 0.0
    history_dropout: float = 0.2  # share of history items hidden per training row (see model)
    temperature: float = 0.03
    uniform_negatives: int = 0
    target_window: int = 1  # positive: any of the user's next N events (1: the next one)
    # Weight of the log-Q correction: 1 the full correction (Yi et al. 2019), 0 none. Below 1
    # the model keeps part of the popularity the in-batch negatives take away.
    logq_correction: float = 1.0
    patience: int = 2
    seed: int = 42
    device: str = "auto"
    threads: int = 1  # 0: the CPUs this process may use; >1 is slower on a busy 2-core box
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        """Refuse values that cannot train."""
        if self.dim < 1 or self.hidden < 1 or self.side_dim < 1:
            raise ValueError("dim, hidden and side_dim must be >= 1")
        if not 0 <= self.seen_pool <= MAX_SEEN_ITEMS:
            raise ValueError(f"seen_pool must be in [0, {MAX_SEEN_ITEMS}]")
        if self.seq_layers < 0 or self.heads < 1 or self.dim % self.heads:
            raise ValueError("seq_layers must be >= 0 and heads >= 1, a divisor of dim")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch_size >= 2")
        if self.lr <= 0 or self.temperature <= 0 or self.weight_decay < 0:
            raise ValueError("lr and temperature must be > 0, weight_decay >= 0")
        if not 1 <= self.members <= 8:
            raise ValueError("members must be in [1, 8]")
        if not 0.0 <= self.history_dropout < 1.0:
            raise ValueError("history_dropout must be in [0, 1)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}")
        if self.uniform_negatives < 0 or self.patience < 1:
            raise ValueError("uniform_negatives must be >= 0 and patience >= 1")
        if self.target_window < 1:
            raise ValueError("target_window must be >= 1")
        if not 0.0 <= self.logq_correction <= 1.0:
            raise ValueError("logq_correction must be in [0, 1]")


@dataclass
class FitHooks:
    """How ``fit`` runs under DistributedDataParallel (see ``two_tower.ddp``); defaults: one process."""

    shard: Callable[[int, int], np.ndarray] | None = None  # (epoch, n_rows) -> this rank's rows
    wrap: Callable[[TwoTower], torch.nn.Module] | None = None  # the DDP wrapper
    agree: Callable[[bool], bool] | None = None  # broadcast the main process's decision
    is_main: bool = True
    checkpoint: Callable[[int, TwoTower], None] | None = None  # main process, on improvement


@dataclass
class FitResult:
    """The best model, its epoch, the per-epoch history and throughput."""

    model: TwoTower
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    samples_per_second: float = (
        0.0  # training rows per second of this process (validation excluded)
    )
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def configure_determinism(seed: int, device: torch.device, threads: int) -> None:
    """Seed everything; deterministic kernels and a fixed thread count on CPU."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0))))


def _to_tensors(
    rows: dict[str, np.ndarray], index: Tensor, device: torch.device
) -> dict[str, Tensor]:
    idx = index.numpy()
    return {k: torch.from_numpy(np.ascontiguousarray(v[idx])).to(device) for k, v in rows.items()}


def item_log_q(training: TrainingSet, item_vocab: np.ndarray) -> np.ndarray:
    """log of each vocabulary item's share of the training rows (index 0 = unknown)."""
    pos = np.searchsorted(item_vocab, training.items.item_id)
    pos = np.minimum(pos, len(item_vocab) - 1)
    known = item_vocab[pos] == training.items.item_id
    counts = np.bincount(pos[known] + 1, minlength=len(item_vocab) + 1).astype(np.float64)
    counts += 1.0  # smoothing: an item never seen still has a finite correction
    out: np.ndarray = np.log(counts / counts.sum()).astype(np.float32)
    return out


def batch_loss(
    model: torch.nn.Module,
    users: dict[str, Tensor],
    items: dict[str, Tensor],
    item_index: Tensor,
    log_q: Tensor,
    params: TrainParams,
    negatives: dict[str, Tensor] | None = None,
) -> Tensor:
    """Sampled-softmax loss of one batch (see the module docstring)."""
    u, v = model(users, items)
    b = u.shape[0]
    logits = u @ v.T / params.temperature
    if params.logq_correction:
        logits = logits - params.logq_correction * (log_q[item_index] + math.log(b)).unsqueeze(0)
    same = item_index.unsqueeze(0) == item_index.unsqueeze(1)
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    if negatives is not None:
        # The item tower alone: running the whole model again recomputed the user tower, the
        # dearer half. Uniform negatives never run under DDP (two_tower.ddp refuses them).
        items_only = cast(torch.nn.Module, getattr(model, "module", model).item_tower)
        vn = items_only(
            negatives["item_id"],
            negatives["category"],
            negatives["price_bucket"],
            negatives["popularity"],
            negatives["age_days"],
        )
        n_items = log_q.shape[0] - 1
        extra = u @ vn.T / params.temperature
        if params.logq_correction:
            extra = extra - params.logq_correction * math.log(vn.shape[0] / n_items)
        logits = torch.cat([logits, extra], dim=1)
    return F.cross_entropy(logits, torch.arange(b, device=logits.device))


def fit(
    model: TwoTower,
    training: TrainingSet,
    *,
    params: TrainParams,
    catalogue: ItemRows | None = None,
    validate: Callable[[TwoTower], float] | None = None,
    hooks: FitHooks | None = None,
) -> FitResult:
    """Train ``model`` on ``training``; keep the weights of the best validation epoch.

    ``validate(model) -> recall`` runs after each epoch (main process only); ``patience`` epochs
    without improvement stop training. ``catalogue`` feeds the uniform negatives. ``hooks``
    makes it one rank of a DistributedDataParallel run.
    """
    params.check()
    keep_freed_memory()  # 1.7x the samples/s: no page faults for every step's tensors
    hooks = hooks or FitHooks()
    shard, wrap, agree, is_main = hooks.shard, hooks.wrap, hooks.agree, hooks.is_main
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(params.seed)
    targets = np.random.default_rng(params.seed)  # the target window's draws
    if params.target_window > 1 and training.history is None:
        raise ValueError("target_window > 1 needs the training rows' event history")
    item_vocab = cast(Tensor, model.user_tower.item_vocab)
    log_q = torch.from_numpy(item_log_q(training, item_vocab.cpu().numpy())).to(device)
    user_arrays, item_arrays = training.users.as_dict(), training.items.as_dict()
    cat_arrays = catalogue.as_dict() if catalogue is not None else None
    model.user_tower.history_dropout = params.history_dropout
    net = wrap(model) if wrap is not None else model
    optimizer = torch.optim.Adam(
        net.parameters(), lr=params.lr, weight_decay=params.weight_decay, fused=True
    )
    schedule = _lr_schedule(optimizer, params, steps_per_epoch=_steps(training, shard, params))
    best_state = copy.deepcopy(model.state_dict())
    best, best_epoch, stale, history, seen_rows = -1.0, 0, 0, [], 0
    train_seconds = 0.0
    for epoch in range(1, params.epochs + 1):
        net.train()
        order = (
            torch.from_numpy(shard(epoch, len(training)))
            if shard
            else torch.randperm(len(training), generator=generator)
        )
        steps = max(1, len(order) // params.batch_size)  # drop the ragged tail: full batches only
        bar = _progress(steps, f"epoch {epoch}/{params.epochs}", params.progress and is_main)
        total = 0.0
        epoch_started = time.perf_counter()
        for step in range(steps):
            index = order[step * params.batch_size : (step + 1) * params.batch_size]
            users = _to_tensors(user_arrays, index, device)
            target = index
            if params.target_window > 1 and training.history is not None:
                target = torch.from_numpy(
                    training.history.future(index.numpy(), params.target_window, targets)
                )
            items = _to_tensors(item_arrays, target, device)
            item_index = _lookup(item_vocab, items["item_id"])
            negatives = None
            if params.uniform_negatives and cat_arrays is not None:
                pick = torch.randint(
                    len(catalogue or []), (params.uniform_negatives,), generator=generator
                )
                negatives = _to_tensors(cat_arrays, pick, device)
            loss = batch_loss(net, users, items, item_index, log_q, params, negatives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            if schedule is not None:
                schedule.step()
            total += float(loss.detach())
            seen_rows += len(index)
            if bar is not None:
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{total / (step + 1):.4f}")
        train_seconds += time.perf_counter() - epoch_started
        record = {"epoch": float(epoch), "loss": total / steps}
        improved = True
        if validate is not None and is_main:
            record["val_recall@20"] = validate(model)
            improved = record["val_recall@20"] > best
        if agree is not None:
            improved = agree(improved)
        if bar is not None:
            bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "epoch"})
            bar.close()
        history.append(record)
        logger.info("epoch %d: %s", epoch, {k: round(v, 5) for k, v in record.items()})
        if improved:
            best, best_epoch, stale = record.get("val_recall@20", best), epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            if hooks.checkpoint is not None and is_main:
                hooks.checkpoint(epoch, model)
        else:
            stale += 1
            if stale >= params.patience and epoch < params.epochs:
                logger.info(
                    "early stop after epoch %d of at most %d: %d epochs without a validation "
                    "gain (best epoch %d)",
                    epoch,
                    params.epochs,
                    stale,
                    best_epoch,
                )
                break
    else:
        logger.info(
            "ran all %d epochs without early stopping (best epoch %d)", params.epochs, best_epoch
        )
    model.load_state_dict(best_state)
    model.user_tower.history_dropout = 0.0  # training only; the exported tower never drops
    model.eval()
    return FitResult(
        model, best_epoch, history, seen_rows / max(train_seconds, 1e-9), train_seconds
    )


def _steps(
    training: TrainingSet, shard: Callable[[int, int], np.ndarray] | None, params: TrainParams
) -> int:
    """Full batches per epoch for this process (a DDP rank sees its shard)."""
    rows = len(shard(1, len(training))) if shard else len(training)
    return max(1, rows // params.batch_size)


def _lr_schedule(
    optimizer: torch.optim.Optimizer, params: TrainParams, *, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Cosine decay from ``lr`` to 1% of it over every planned step; None for a constant lr."""
    if params.lr_schedule == "constant":
        return None
    total = max(1, steps_per_epoch * params.epochs)

    def factor(step: int) -> float:
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _lookup(vocab: Tensor, ids: Tensor) -> Tensor:
    from two_tower.towers import lookup

    return lookup(vocab, ids)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)
