"""``cascade train two-tower``, ``cascade export two-tower``, ``cascade serve triton``.

Thin Typer shells over typed functions (``two_tower.pipeline``, ``two_tower.export``,
``two_tower.triton_server``); torch is imported inside the command bodies so ``cascade --help``
stays fast. Bad input and missing artifacts print one line and exit 2.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from cascade.evaluation.split import DEFAULT_MIN_INTERACTIONS, DEFAULT_TEST_FRACTION, SplitParams
from cascade.runtime.paths import Layout

logger = logging.getLogger(__name__)

_DEFAULT_REPOSITORY = Path(__file__).resolve().parents[1] / "triton_models"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def train_two_tower(
    data: str = typer.Option(
        "demo",
        "--data",
        "-d",
        envvar="CASCADE_DATASET",
        help="Data set name or spec: demo, synthetic:demo, movielens:PATH, csv:PATH.",
    ),
    dim: int = typer.Option(128, min=1, help="Embedding dimension of both towers."),
    epochs: int = typer.Option(20, min=1, help="Most epochs; early stopping may end sooner."),
    batch_size: int = typer.Option(1024, min=2, help="Rows per batch (= in-batch negatives)."),
    lr: float = typer.Option(0.004, min=0.0, help="Adam learning rate."),
    lr_schedule: str = typer.Option(
        "constant", help="constant, or cosine (decays to 1% of --lr over all --epochs)."
    ),
    members: int = typer.Option(
        1, min=1, max=8, help="Towers trained with their own seeds and averaged (1: one tower)."
    ),
    history_dropout: float = typer.Option(
        0.2, min=0.0, max=0.99, help="Share of history items hidden per training row."
    ),
    temperature: float = typer.Option(0.03, min=0.0, help="Softmax temperature."),
    uniform_negatives: int = typer.Option(
        0, min=0, help="Extra uniformly sampled negatives per batch."
    ),
    logq_correction: float = typer.Option(
        1.0,
        min=0.0,
        max=1.0,
        help="Weight of the log-Q popularity correction (1: full, 0: none).",
    ),
    target_window: int = typer.Option(
        1,
        min=1,
        max=1000,
        help="Positive of a row: any of the user's next N events (1: the next event only).",
    ),
    seen_pool: int = typer.Option(
        500, min=0, max=500, help="Newest distinct seen items the user tower pools (0: off)."
    ),
    seen_attention: bool = typer.Option(
        True, "--seen-attention/--seen-mean", help="Attention pooling of the seen set, or its mean."
    ),
    seq_layers: int = typer.Option(
        1,
        min=0,
        help="Self-attention layers over the recent items (0: their mean).",
    ),
    heads: int = typer.Option(2, min=1, help="Attention heads (a divisor of --dim)."),
    patience: int = typer.Option(2, min=1, help="Epochs without validation gain before stopping."),
    engine: str = typer.Option(
        "asof", help="Point-in-time join: 'asof' (fast) or 'feast' (get_historical_features)."
    ),
    device: str = typer.Option("auto", help="auto (CUDA when available), cpu, cuda, cuda:N."),
    threads: int = typer.Option(
        1, min=0, help="CPU threads for torch; 0: every CPU this process may use."
    ),
    full_data: bool = typer.Option(
        False,
        "--full-data/--train-split",
        help="Train on all interactions (to serve) or the evaluation train split.",
    ),
    test_fraction: float = typer.Option(
        DEFAULT_TEST_FRACTION, help="Split: share of each user's latest interactions held out."
    ),
    min_interactions: int = typer.Option(
        DEFAULT_MIN_INTERACTIONS, help="Split: users with fewer stay wholly in train."
    ),
    seed: int = typer.Option(
        42, help="Seed of initialisation, shuffling and the validation sample."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train the Two-Tower model (profile and item features by Feast's point-in-time join, user history at each event's time); save a versioned artifact as `latest`."""
    from cascade.data.dataset import DatasetNotFoundError
    from cascade.data.errors import DataSourceError
    from cascade.runtime.feature_store import FeatureStoreError
    from two_tower.pipeline import run_train_two_tower
    from two_tower.train import TrainParams

    if engine not in ("asof", "feast"):
        raise typer.BadParameter("choose asof or feast", param_hint="--engine")
    try:
        params = TrainParams(
            dim=dim,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            lr_schedule=lr_schedule,
            history_dropout=history_dropout,
            members=members,
            temperature=temperature,
            uniform_negatives=uniform_negatives,
            target_window=target_window,
            logq_correction=logq_correction,
            seen_pool=seen_pool,
            seen_attention=seen_attention,
            seq_layers=seq_layers,
            heads=heads,
            patience=patience,
            seed=seed,
            device=device,
            threads=threads,
            progress=progress,
        )
        params.check()
        split = (
            None
            if full_data
            else SplitParams(test_fraction=test_fraction, min_interactions=min_interactions)
        )
        folder = run_train_two_tower(
            layout=Layout.from_env(), spec=data, split=split, params=params, engine=engine
        )
    except (DataSourceError, DatasetNotFoundError, FeatureStoreError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if folder is not None:
        _echo_training_summary(folder)
    typer.echo(f"two_tower artifact: {folder}")


def _echo_training_summary(folder: Path) -> None:
    """The training set's size and share of empty user histories, with the warning if any."""
    from two_tower.artifacts import read_metadata
    from two_tower.training_frames import empty_history_warning

    meta = read_metadata(folder)
    if "train_seconds" in meta:
        epochs = [len(h) for h in meta.get("history", [])]
        typer.echo(
            f"training: {meta['train_seconds']:.0f} s, epochs run {epochs}, best epoch "
            f"{meta.get('best_epoch')}, peak memory {meta.get('peak_rss_mb', float('nan')):.0f} MiB"
        )
    prior = meta.get("prior") or {}
    if "validation_recall@20" in prior:
        typer.echo(
            f"recent-popularity prior: beta {prior['beta']} (validation Recall@20 by beta: "
            f"{prior['validation_recall@20']})"
        )
    neighbours = meta.get("neighbours") or {}
    if "validation_recall@20" in neighbours:
        typer.echo(
            f"item-neighbour term: gamma {neighbours['gamma']} (validation Recall@20 by gamma: "
            f"{neighbours['validation_recall@20']})"
        )
    summary = meta.get("training_set") or {}
    if "rows" not in summary:
        return
    share = float(summary.get("empty_history_share", 0.0))
    typer.echo(
        f"training rows: {summary['rows']:,}, user history at event time, "
        f"{share:.1%} with an empty history"
    )
    warning = empty_history_warning(share, int(summary["rows"]))
    if warning:
        typer.echo(f"WARNING: {warning}", err=True)


def export_two_tower(
    repository: Annotated[
        Path, typer.Option(help="Triton model repository.")
    ] = _DEFAULT_REPOSITORY,
    artifact: Annotated[
        Path | None, typer.Option(help="Artifact folder; default: the `latest` Two-Tower artifact.")
    ] = None,
    keep: int = typer.Option(2, min=1, help="Versions to keep (also the config's version_policy)."),
) -> None:
    """Export a trained Two-Tower artifact as a new Triton model version; keep the newest N."""
    from two_tower import feature_settings
    from two_tower.artifacts import ArtifactError, latest_dir, load_two_tower_artifact
    from two_tower.export import ExportError, export_to_triton

    try:
        folder = artifact or latest_dir(Layout.from_env().artifacts_dir)
        trained = load_two_tower_artifact(folder)
        # Served features must be the ones it learned from (the gateway sends what the store holds)
        feature_settings.check(trained.metadata, what=f"Two-Tower artifact {folder.name}")
        result = export_to_triton(trained, repository=repository, keep=keep)
    except (ArtifactError, ExportError, feature_settings.FeatureSettingsMismatch) as exc:
        raise _fail(str(exc)) from None
    removed = f", removed {result.removed}" if result.removed else ""
    typer.echo(
        f"two_tower version {result.version} ({result.n_items} items) -> {result.version_dir}{removed}"
    )


def serve_triton(
    repository: Annotated[
        Path, typer.Option(help="Triton model repository.")
    ] = _DEFAULT_REPOSITORY,
    http_port: int = typer.Option(8000, min=0, help="KServe v2 HTTP port (0: a free one)."),
    grpc_port: int = typer.Option(8001, min=0, help="KServe v2 gRPC port (0: a free one)."),
    metrics_port: int = typer.Option(8002, min=0, help="Prometheus metrics port (0: a free one)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    config_name: str | None = typer.Option(
        None, help="Custom model config: 'gpu' loads configs/gpu.pbtxt."
    ),
) -> None:
    """Run tritonserver on the repository in the foreground until Ctrl-C / SIGTERM."""
    from cascade.runtime.procs import ProcessError
    from two_tower.export import list_versions
    from two_tower.triton_server import TritonNotInstalledError, TritonProcess, TritonSettings

    if not list_versions(repository):
        raise _fail(f"no two_tower version in {repository}; run `cascade export two-tower` first")
    settings = TritonSettings(
        model_repository=repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        host=host,
        model_config_name=config_name,
    )
    try:
        server = TritonProcess(settings)
        stop = _stop_on_signals()
        server.start()
        server.wait_ready(timeout=180)
    except (TritonNotInstalledError, ProcessError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"tritonserver ready: http {server.http_url}, grpc {server.grpc_url} (log {server.log_path})"
    )
    while server.running() and not stop():
        time.sleep(0.5)
    code = server.stop()
    typer.echo(f"tritonserver stopped (exit {code})")


def _stop_on_signals() -> Callable[[], bool]:
    """Turn SIGINT/SIGTERM into a flag the foreground loop polls."""
    flag = {"stop": False}

    def handler(signum: int, frame: FrameType | None) -> None:
        flag["stop"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return lambda: flag["stop"]
