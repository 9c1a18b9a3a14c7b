"""Two-Tower benchmark: Triton serving latency/throughput and training throughput.

``python -m cascade.bench.two_tower`` (``make bench-triton``) prints markdown tables:

1. Triton: for the ``demo`` catalogue (the latest trained artifact when there is one, else a
   randomly initialised model of the same shape) and a 100K-item catalogue (randomly
   initialised: latency does not depend on the weights), each exported into a scratch
   repository and served by a real tritonserver; requests of one user with 20 recent and up to
   500 seen items, k=20, sent by the async gRPC client at concurrency 1, 8 and 32 for
   ``duration`` seconds each: throughput, p50, p99.
2. Training throughput in samples/s on CPU: one process, then 2-process DDP (gloo) through
   torchrun, on the same sample of the ``demo`` interactions, one epoch each.
3. The evaluation table from ``<CASCADE_HOME>/reports/demo/report.json`` when it exists.

Everything runs on this machine's CPUs together with the load generator: figures are for
comparison, not capacity planning.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cascade.runtime.paths import Layout
from two_tower import contract

if TYPE_CHECKING:
    from two_tower.train import TrainParams

logger = logging.getLogger(__name__)

CONCURRENCY = (1, 8, 32)


def random_trained(
    n_items: int,
    *,
    n_users: int = 20_000,
    dim: int | None = None,
    seed: int = 0,
    params: TrainParams | None = None,
    neighbour_gamma: float = 0.8,
) -> Any:
    """A randomly initialised ``TrainedTwoTower`` with ``n_items`` items (for latency only),
    shaped like the shipped defaults (``TrainParams``: dim, members, the user tower's seen-set
    and sequence readers, the user-id embedding) unless ``dim`` is given (then 1 member of that
    size), or shaped by ``params`` (a ``TrainParams``: another user-tower shape to compare).
    With ``neighbour_gamma`` > 0 it carries full random item-neighbour tables
    (``two_tower.item_neighbours``, ``PER_ITEM`` per item) as a trained primary does; 0: none
    (the shape shipped before the term)."""
    import torch

    from two_tower.artifacts import TrainedTwoTower
    from two_tower.item_neighbours import PER_ITEM, ItemNeighbours
    from two_tower.model import build_two_tower
    from two_tower.towers import StringVocab, TwoTowerConfig
    from two_tower.train import TrainParams

    shape = params or TrainParams()
    if params is None and dim:
        shape = dataclasses.replace(shape, dim=dim, members=1)

    torch.manual_seed(seed)
    countries = np.sort(
        np.array([contract.country_code(c) for c in ("DE", "FR", "US")], dtype=np.int64)
    )
    # The network as training builds it from TrainParams (two_tower.prepare.build_model), so the
    # latency rows measure the tower that ships, not TwoTowerConfig's bare defaults.
    cfg = TwoTowerConfig(
        n_users=n_users + 1,
        n_items=n_items + 1,
        n_age_buckets=8,
        n_countries=len(countries) + 1,
        n_categories=21,
        n_price_buckets=6,
        dim=shape.dim,
        hidden=shape.hidden,
        side_dim=shape.side_dim,
        seen_pool=shape.seen_pool,
        seen_attention=int(shape.seen_attention),
        seq_layers=shape.seq_layers,
        heads=shape.heads,
        user_id_embedding=int(shape.user_id_embedding),
        members=shape.members,
    )
    model = build_two_tower(
        cfg, user_vocab=np.arange(n_users), item_vocab=np.arange(n_items), country_vocab=countries
    )
    emb = torch.nn.functional.normalize(torch.randn(n_items, cfg.out_dim), dim=1).numpy()
    rng = np.random.default_rng(seed)
    per_item = min(PER_ITEM, n_items)
    neighbours = ItemNeighbours(
        items=rng.integers(0, n_items, size=(n_items, per_item), dtype=np.int64),
        weights=np.sort(rng.random((n_items, per_item), dtype=np.float32), axis=1)[:, ::-1].copy(),
    )
    return TrainedTwoTower(
        model=model.eval(),
        user_vocab=np.arange(n_users),
        item_vocab=np.arange(n_items, dtype=np.int64),
        country_vocab=countries,
        countries=["DE", "FR", "US"],
        categories=StringVocab([]),
        item_embeddings=emb.astype(np.float32),
        popular_items=np.arange(n_items, dtype=np.int64),
        popular_counts=np.ones(n_items, dtype=np.int64),
        metadata={"model_version": f"random-{n_items}"},
        neighbours=neighbours if neighbour_gamma > 0 else None,
        neighbour_gamma=neighbour_gamma,
    )


def _request_arrays(rng: np.random.Generator, n_items: int, n_users: int) -> dict[str, np.ndarray]:
    seen = rng.choice(n_items, size=min(int(rng.integers(20, 500)), n_items), replace=False)
    arrays: dict[str, np.ndarray] = {
        contract.USER_ID: np.array([[rng.integers(n_users)]], np.int64),
        contract.AGE_BUCKET: np.array([[2]], np.int64),
        contract.COUNTRY: np.array([[contract.country_code("DE")]], np.int64),
        contract.INTERACTION_COUNT: np.array([[len(seen)]], np.int64),
        contract.RECENT_ITEMS: np.array(
            [contract.pad_items(seen[:20].tolist(), contract.RECENT_ITEMS_LEN)], np.int64
        ),
        contract.SEEN_ITEMS: np.array(
            [contract.pad_items(seen.tolist(), contract.MAX_SEEN_ITEMS)], np.int64
        ),
        contract.EXCLUDE_ITEMS: np.array(
            [contract.pad_items([], contract.MAX_EXCLUDE_ITEMS)], np.int64
        ),
        contract.K: np.array([[20]], np.int32),
    }
    # Any further input of the contract (the category filters) travels as padding (-1: none).
    for spec in contract.INPUTS:
        if spec.name not in arrays:
            arrays[spec.name] = np.full((1, *spec.dims), -1, dtype=spec.numpy_dtype)
    return arrays


async def _load(
    url: str,
    *,
    concurrency: int,
    duration: float,
    n_items: int,
    n_users: int,
    cpu_pid: int | None = None,
) -> dict[str, Any]:
    """Closed-loop load at ``concurrency`` for ``duration`` s after 1 s of warm-up; with
    ``cpu_pid`` (the server), its CPU seconds (and its children's) over the measured window."""
    import tritonclient.grpc.aio as grpcclient

    from cascade.bench.cpu_meter import cpu_seconds

    client = grpcclient.InferenceServerClient(url)
    rng = np.random.default_rng(concurrency)
    pool = [_request_arrays(rng, n_items, n_users) for _ in range(64)]
    latencies: list[float] = []
    errors = 0

    async def worker(w: int) -> None:
        nonlocal errors
        i = w
        while time.perf_counter() < stop:
            arrays = pool[i % len(pool)]
            i += concurrency
            inputs = []
            for spec in contract.INPUTS:
                t = grpcclient.InferInput(spec.name, list(arrays[spec.name].shape), spec.dtype)
                t.set_data_from_numpy(arrays[spec.name])
                inputs.append(t)
            started = time.perf_counter()
            try:
                await client.infer(contract.MODEL_NAME, inputs)
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    # warm-up, then measure
    stop = time.perf_counter() + 1.0
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    latencies.clear()
    cpu_before = cpu_seconds(cpu_pid) if cpu_pid is not None else float("nan")
    started = time.perf_counter()
    stop = started + duration
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(cpu_pid) if cpu_pid is not None else float("nan")
    await client.close()
    lat = np.array(latencies) * 1000.0
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "errors": errors,
        "throughput": len(lat) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "elapsed_s": elapsed,
        "server_cpu_s": cpu_after - cpu_before,
    }


def triton_process(trained: Any, *, label: str, workdir: Path) -> Any:
    """Export ``trained`` into a scratch repository under ``workdir``; a ``TritonProcess``
    serving it on free ports (not started: ``with`` it, then ``wait_ready``)."""
    from two_tower.export import TEMPLATE_NAME, export_to_triton, model_dir
    from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY, TritonProcess, TritonSettings

    slug = "".join(
        ch if ch.isalnum() else "-" for ch in label
    )  # the stub's command line is not quoted
    repo = workdir / f"repo-{slug}"
    model_dir(repo).mkdir(parents=True)
    shutil.copy(
        model_dir(DEFAULT_MODEL_REPOSITORY) / TEMPLATE_NAME, model_dir(repo) / TEMPLATE_NAME
    )
    export_to_triton(trained, repository=repo)
    # TritonProcess compiles each model.py first (two_tower.model_bytecode): no poll reload.
    settings = TritonSettings(
        model_repository=repo,
        backends_dir=workdir / "backends",
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        otlp_endpoint=None,
    )
    return TritonProcess(settings, log_path=workdir / f"triton-{slug}.log")


def load_level(
    trained: Any, url: str, *, concurrency: int, duration: float, cpu_pid: int | None = None
) -> dict[str, Any]:
    """One concurrency level against the server at ``url`` serving ``trained`` (see ``_load``)."""
    return asyncio.run(
        _load(
            url,
            concurrency=concurrency,
            duration=duration,
            n_items=len(trained.item_ids),
            n_users=len(trained.user_vocab),
            cpu_pid=cpu_pid,
        )
    )


def bench_triton(
    trained: Any, *, label: str, duration: float, workdir: Path
) -> list[dict[str, Any]]:
    """Export ``trained`` into a scratch repository, serve it, load it at each concurrency."""
    server = triton_process(trained, label=label, workdir=workdir)
    rows = []
    with server:
        server.wait_ready(timeout=240)
        for c in CONCURRENCY:
            row = load_level(trained, server.grpc_url, concurrency=c, duration=duration)
            row["catalogue"] = label
            rows.append(row)
            logger.info("triton %s: %s", label, row)
    return rows


def bench_training(*, workdir: Path, rows: int, batch_size: int) -> list[dict[str, Any]]:
    """samples/s of one epoch, single process and 2-process DDP, on a sample of demo interactions."""
    from cascade.data.synthetic import generate
    from two_tower.ddp import torchrun_command
    from two_tower.pipeline import train_in_memory
    from two_tower.train import TrainParams

    ds = generate(scale="demo", seed=42)
    sample = ds.interactions.sample(n=min(rows, len(ds.interactions)), random_state=0).reset_index(
        drop=True
    )
    path = workdir / "train.parquet"
    sample.to_parquet(path)
    params = TrainParams(epochs=1, batch_size=batch_size, progress=False, threads=1, device="cpu")
    single = train_in_memory(sample, params=params, users=ds.users, items=ds.items)
    out = [
        {
            "mode": "1 process (1 thread)",
            "samples_per_s": single.metadata["samples_per_second"],
            "rows": len(sample),
        }
    ]
    dump = workdir / "ddp"
    cmd = torchrun_command(
        [
            "--interactions",
            str(path),
            "--epochs",
            "1",
            "--batch-size",
            str(batch_size),
            "--dump-dir",
            str(dump),
        ]
    )
    env = dict(
        os.environ,
        CASCADE_HOME=str(workdir / "home"),
        OMP_NUM_THREADS="1",
        CASCADE_LOG_LEVEL="WARNING",
    )
    subprocess.run(cmd, env=env, check=True, timeout=1800, capture_output=True)
    total = sum(
        json.loads((dump / f"rank{r}.json").read_text())["samples_per_second"] for r in range(2)
    )
    out.append({"mode": "2-process DDP (gloo)", "samples_per_s": total, "rows": len(sample)})
    return out


def _trained_demo(layout: Layout) -> tuple[Any, str]:
    from two_tower.artifacts import ArtifactError, latest_dir, load_two_tower_artifact

    try:
        return load_two_tower_artifact(latest_dir(layout.artifacts_dir)), "demo (trained)"
    except (ArtifactError, OSError) as exc:
        logger.info("no trained artifact (%s): random demo-shaped model", exc)
        return random_trained(3_000), "demo-shape (random)"


def format_tables(
    triton_rows: list[dict[str, Any]], train_rows: list[dict[str, Any]], report: str | None
) -> str:
    """The benchmark's markdown output."""
    lines = [
        "## Triton (two_tower, CPU instance, gRPC aio client, k=20)",
        "",
        "| catalogue | concurrency | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in triton_rows:
        lines.append(
            f"| {r['catalogue']} | {r['concurrency']} | {r['throughput']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |"
        )
    lines += [
        "",
        "## Two-Tower training throughput (CPU)",
        "",
        "| mode | samples/s | rows |",
        "|---|---:|---:|",
    ]
    for r in train_rows:
        lines.append(f"| {r['mode']} | {r['samples_per_s']:.0f} | {r['rows']} |")
    lines += [
        "",
        "## Evaluation (demo)",
        "",
        report or "no report yet: run `cascade evaluate --models popular,als,two_tower`",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description="Two-Tower Triton and training benchmark")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per concurrency level")
    parser.add_argument("--large-items", type=int, default=100_000)
    parser.add_argument("--train-rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    layout = Layout.from_env()
    workdir = Path(tempfile.mkdtemp(prefix="two-tower-bench-"))
    try:
        demo, label = _trained_demo(layout)
        triton_rows = bench_triton(demo, label=label, duration=args.duration, workdir=workdir)
        triton_rows += bench_triton(
            random_trained(args.large_items),
            label=f"{args.large_items // 1000}K items (random)",
            duration=args.duration,
            workdir=workdir,
        )
        train_rows = (
            []
            if args.skip_training
            else bench_training(workdir=workdir, rows=args.train_rows, batch_size=args.batch_size)
        )
        report_path = layout.reports_dir / "demo" / "report.md"
        report = report_path.read_text() if report_path.is_file() else None
        print(format_tables(triton_rows, train_rows, report))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
