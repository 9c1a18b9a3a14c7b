"""DistributedDataParallel with 2 CPU processes (gloo): identical weights on both ranks, and
quality within tolerance of single-process training on the same data."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from cascade.evaluation.split import temporal_split
from tests.two_tower.conftest import TINY

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def split_frames(tmp_path_factory):
    from cascade.data.synthetic import generate

    ds = generate(scale="tiny", seed=3)
    train, test = temporal_split(ds.interactions)
    folder = tmp_path_factory.mktemp("ddp")
    train.to_parquet(folder / "train.parquet")
    test.to_parquet(folder / "test.parquet")
    return folder, train, test


PARAMS = {"hidden": 16, "side_dim": 4, "seen_pool": 10, "lr": 0.01}


def test_two_process_ddp_matches_single_process(split_frames, tmp_path):
    from dataclasses import replace

    from two_tower.ddp import torchrun_command
    from two_tower.pipeline import train_in_memory
    from two_tower.validation import holdout_metrics

    folder, train, test = split_frames
    cmd = torchrun_command(
        [
            "--interactions",
            str(folder / "train.parquet"),
            "--test",
            str(folder / "test.parquet"),
            "--epochs",
            "3",
            "--batch-size",
            "128",
            "--dim",
            "8",
            "--params",
            json.dumps(PARAMS),
            "--dump-dir",
            str(tmp_path),
        ]
    )
    env = dict(os.environ, CASCADE_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (
        load_file(str(tmp_path / "rank0.safetensors")),
        load_file(str(tmp_path / "rank1.safetensors")),
    )
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    ddp_recall = json.loads((tmp_path / "rank0.json").read_text())["recall@20"]

    single = train_in_memory(
        train,
        params=replace(
            TINY, epochs=3, batch_size=128, dim=8, seen_pool=10, hidden=16, side_dim=4, lr=0.01
        ),
    )
    single_recall = holdout_metrics(single, train=train, test=test, users=None)["two_tower"][
        "recall@20"
    ]
    assert ddp_recall >= 0.8 * single_recall - 0.02, (ddp_recall, single_recall)
