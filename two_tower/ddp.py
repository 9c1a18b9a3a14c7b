"""Distributed training: ``torchrun --nproc_per_node N -m two_tower.ddp [options]``.

Every rank builds the same training rows, then runs the training loop of ``two_tower.train``
wrapped in DistributedDataParallel: backend ``nccl`` with one GPU per rank when CUDA is
available, ``gloo`` on CPU. Rows are sharded with ``DistributedSampler`` (reshuffled per epoch
by ``set_epoch``); the batch size given is the global one, so each rank takes
``batch_size / world_size`` rows and its in-batch negatives come from its own shard. Gradients
are averaged across ranks, so every rank holds the same weights after every step. Rank 0
validates, decides early stopping (broadcast to the others), checkpoints improved epochs and
saves the artifact.

``--interactions FILE.parquet`` trains in memory on that frame (tests, benchmarks) instead of
a data set through Feast; ``--dump-dir`` makes each rank write its final weights there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cascade.evaluation.split import SplitParams
from cascade.runtime.paths import Layout
from cascade.runtime.procs import free_port
from two_tower.model import TwoTower
from two_tower.train import FitHooks, TrainParams

logger = logging.getLogger(__name__)


def _shard(world: int, rank: int, seed: int) -> Callable[[int, int], np.ndarray]:
    from torch.utils.data import DistributedSampler

    def shard(epoch: int, n: int) -> np.ndarray:
        rows: Any = range(n)  # DistributedSampler only needs len()
        sampler: DistributedSampler[int] = DistributedSampler(
            rows, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        return np.fromiter(iter(sampler), dtype=np.int64)

    return shard


def _agree(improved: bool) -> bool:
    flag = torch.tensor([1 if improved else 0], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def make_hooks(*, seed: int, checkpoint_dir: Path | None) -> tuple[FitHooks, torch.device]:
    """Initialise the process group from torchrun's environment; hooks for ``fit``."""
    from torch.nn.parallel import DistributedDataParallel

    cuda = torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)

    def wrap(model: TwoTower) -> torch.nn.Module:
        return DistributedDataParallel(model, device_ids=[local] if cuda else None)

    def checkpoint(epoch: int, model: TwoTower) -> None:
        if checkpoint_dir is None:
            return
        from safetensors.torch import save_model

        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        save_model(model, str(checkpoint_dir / "best.safetensors"))
        (checkpoint_dir / "best.json").write_text(
            json.dumps({"epoch": epoch, "world_size": world}) + "\n"
        )

    hooks = FitHooks(
        shard=_shard(world, rank, seed),
        wrap=wrap,
        agree=_agree,
        is_main=rank == 0,
        checkpoint=checkpoint,
    )
    return hooks, device


def torchrun_command(args: list[str], *, nproc: int = 2) -> list[str]:
    """``python -m torch.distributed.run ... -m two_tower.ddp ARGS`` on one node, free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--nnodes=1",
        f"--master_port={free_port()}",
        "-m",
        "two_tower.ddp",
        *args,
    ]


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``torchrun -m two_tower.ddp``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default="demo", help="data set spec (as `cascade train two-tower --data`)"
    )
    parser.add_argument(
        "--interactions", type=Path, help="train in memory on this parquet frame instead"
    )
    parser.add_argument("--epochs", type=int, default=TrainParams.epochs)
    parser.add_argument(
        "--batch-size", type=int, default=TrainParams.batch_size, help="global batch size"
    )
    parser.add_argument("--dim", type=int, default=TrainParams.dim)
    parser.add_argument("--seed", type=int, default=TrainParams.seed)
    parser.add_argument("--params", default="{}", help="JSON of further TrainParams fields")
    parser.add_argument(
        "--dump-dir", type=Path, help="each rank writes rank<N>.safetensors and metrics here"
    )
    parser.add_argument(
        "--test", type=Path, help="with --interactions: held-out frame; rank 0 reports Recall@20"
    )
    parser.add_argument("--full-data", action="store_true", help="train on every interaction")
    args = parser.parse_args(argv)
    if json.loads(args.params).get("uniform_negatives"):
        # the extra negatives need a second forward pass per step, which DDP's reducer refuses
        parser.error("uniform_negatives is not supported under DDP")
    logging.basicConfig(
        level=os.environ.get("CASCADE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    layout = Layout.from_env()
    hooks, device = make_hooks(
        seed=args.seed, checkpoint_dir=layout.artifacts_dir / "two_tower" / ".ddp-checkpoint"
    )
    world = dist.get_world_size()
    params = TrainParams(
        epochs=args.epochs,
        batch_size=max(2, args.batch_size // world),
        dim=args.dim,
        seed=args.seed,
        device=str(device),
        threads=1,
        progress=hooks.is_main,
        **json.loads(args.params),
    )
    try:
        if args.interactions is not None:
            _train_frame(args, params, hooks)
        else:
            from two_tower.pipeline import run_train_two_tower

            split = None if args.full_data else SplitParams()
            folder = run_train_two_tower(
                layout=layout, spec=args.data, split=split, params=params, hooks=hooks
            )
            if folder is not None:
                print(f"two_tower artifact: {folder}")
    finally:
        dist.destroy_process_group()


def _train_frame(args: argparse.Namespace, params: TrainParams, hooks: FitHooks) -> None:
    import pandas as pd
    from safetensors.torch import save_model

    from two_tower.pipeline import train_in_memory

    frame = pd.read_parquet(args.interactions)
    trained = train_in_memory(frame, params=replace(params, progress=False), hooks=hooks)
    if args.dump_dir is not None:
        args.dump_dir.mkdir(parents=True, exist_ok=True)
        rank = dist.get_rank()
        save_model(trained.model, str(args.dump_dir / f"rank{rank}.safetensors"))
        meta = {
            "samples_per_second": trained.metadata.get("samples_per_second"),
            "world_size": dist.get_world_size(),
        }
        if args.test is not None and rank == 0:
            from two_tower.validation import holdout_metrics

            metrics = holdout_metrics(
                trained, train=frame, test=pd.read_parquet(args.test), users=None
            )
            meta["recall@20"] = metrics["two_tower"]["recall@20"]
        (args.dump_dir / f"rank{rank}.json").write_text(json.dumps(meta) + "\n")


if __name__ == "__main__":
    main()
