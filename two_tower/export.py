"""Export a trained Two-Tower artifact into the Triton model repository.

``export_to_triton`` writes ``triton_models/two_tower/<N>/`` (N = the highest existing version
+ 1) with::

    model.py              copied from triton_models/two_tower/model.py (the tracked template)
    user_tower.pt         TorchScript of the user tower
    item_embeddings.npy   float32 (n_items, dim)
    item_ids.npy          int64 sorted
    item_categories.npy   int64: each item's ``contract.category_code`` (0 = unknown), in
                          item_ids order; only when the artifact records item categories
                          (trained after the category filter), ``item_categories`` in metadata
    item_neighbours.pt    TorchScript item-neighbour term (two_tower.item_neighbours), optional:
                          seen_items in, (rows, n_items) added to the scores before masking
    item_bias.npy         float32, item_ids order: the recent-popularity prior the model adds to
                          every score (``two_tower.item_prior``); only when the artifact has one
    metadata.json         contract fingerprint, max_k, list lengths, artifact version, dim, n_items

then regenerates ``config.pbtxt`` and ``configs/gpu.pbtxt`` from the contract and deletes all but
the ``keep`` newest version folders (the config's ``version_policy: latest { num_versions }``
uses the same number). The similar-items model ``two_tower_similar`` then gets the same versions,
each serving its Two-Tower version's item embeddings (``two_tower.similar_export``). A fresh
clone plus ``cascade train two-tower`` and ``cascade export two-tower`` gives a servable
repository.

The folder is written under a hidden temporary name and renamed into place, so a polling server
never sees half a version. The local server (``cascade up``) polls the repository
(``--model-control-mode=poll``), so a new version is served within seconds; containers load a
version explicitly once its manifest verifies (``two_tower.manifest``).

No ANN index: exact top-k by one (n_users x dim) @ (dim x n_items) product costs about
``dim * n_items`` multiply-adds per user, 6.4M at 100K items and dim 64, well under a
millisecond on one GPU and a few ms on one CPU core. An ANN index (FAISS IVF-PQ or HNSW) pays
off from about 1M items, or when the catalogue no longer fits the device's memory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from two_tower import contract
from two_tower.artifacts import TrainedTwoTower
from two_tower.manifest import write_manifest
from two_tower.model_bytecode import compile_version
from two_tower.similar_export import sync_versions as sync_similar
from two_tower.triton_config import DEFAULT_VERSIONS_TO_KEEP, write_configs

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "model.py"
TOWER_FILE = "user_tower.pt"
CATEGORIES_FILE = "item_categories.npy"
BIAS_FILE = "item_bias.npy"
NEIGHBOURS_FILE = "item_neighbours.pt"


class ExportError(RuntimeError):
    """The repository or the artifact cannot be exported (the CLI prints the message)."""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and removed."""

    version: int
    version_dir: Path
    removed: list[int]
    n_items: int


def model_dir(repository: Path) -> Path:
    """``<repository>/two_tower``: where config.pbtxt, the template and versions live."""
    return Path(repository) / contract.MODEL_NAME


def list_versions(repository: Path) -> list[int]:
    """Numeric version folders of the model, ascending."""
    folder = model_dir(repository)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def category_codes(names: np.ndarray) -> np.ndarray:
    """``contract.category_code`` of each item's category name (int64; "" -> 0)."""
    table = {name: contract.category_code(name) for name in set(names.tolist())}
    return np.fromiter((table[n] for n in names.tolist()), dtype=np.int64, count=len(names))


def script_user_tower(trained: TrainedTwoTower, path: Path) -> None:
    """Save the user tower as TorchScript (CPU weights; Triton moves it to its device)."""
    import torch

    tower = trained.model.user_tower.cpu().eval()
    # TorchScript is deprecated in torch 2.13 in favour of torch.export, but it is what every
    # Triton image's torch can load (the production image's torch is older than ours).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        scripted = torch.jit.script(tower)
        scripted.save(str(path))  # type: ignore[no-untyped-call]


def script_neighbour_term(trained: TrainedTwoTower, path: Path) -> bool:
    """Save the item-neighbour term as TorchScript when the artifact has one (True if saved)."""
    import torch

    term = trained.neighbour_term()
    if term is None:
        return False
    with warnings.catch_warnings():  # see script_user_tower
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        torch.jit.script(term.eval()).save(str(path))  # type: ignore[no-untyped-call]
    return True


def export_to_triton(
    trained: TrainedTwoTower,
    *,
    repository: Path,
    keep: int = DEFAULT_VERSIONS_TO_KEEP,
    template: Path | None = None,
) -> ExportResult:
    """Write a new version of ``trained`` into ``repository`` and prune old versions."""
    if keep < 1:
        raise ExportError(f"keep must be >= 1, got {keep}")
    folder = model_dir(repository)
    template = template or folder / TEMPLATE_NAME
    if not template.is_file():
        raise ExportError(f"Triton model template {template} is missing (tracked in git)")
    folder.mkdir(parents=True, exist_ok=True)
    existing = list_versions(repository)
    version = (existing[-1] if existing else 0) + 1
    meta = {
        "artifact_version": trained.metadata.get("model_version", "unsaved"),
        "contract": contract.fingerprint(),
        "max_k": contract.MAX_K,
        "recent_items_len": contract.RECENT_ITEMS_LEN,
        "max_seen_items": contract.MAX_SEEN_ITEMS,
        "max_exclude_items": contract.MAX_EXCLUDE_ITEMS,
        "max_filter_categories": contract.MAX_FILTER_CATEGORIES,
        "item_categories": trained.item_categories is not None,
        "item_bias": trained.item_bias is not None,
        "item_neighbours": trained.neighbour_term() is not None,
        "neighbours": trained.metadata.get("neighbours"),
        "prior": trained.metadata.get("prior"),
        "dim": trained.model.cfg.out_dim,
        "n_items": len(trained.item_ids),
        "trained_at": trained.metadata.get("trained_at"),
        "metrics": trained.metadata.get("metrics", {}),
        # what the model checks a gateway's GATEWAY_DATASET_ID against (and the rollout gate reads)
        "data": trained.metadata.get("data"),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=folder))
    try:
        shutil.copy2(template, tmp / TEMPLATE_NAME)
        script_user_tower(trained, tmp / TOWER_FILE)
        script_neighbour_term(trained, tmp / NEIGHBOURS_FILE)
        np.save(
            tmp / "item_ids.npy",
            np.ascontiguousarray(trained.item_ids, dtype=np.int64),
            allow_pickle=False,
        )
        np.save(
            tmp / "item_embeddings.npy",
            np.ascontiguousarray(trained.item_embeddings, dtype=np.float32),
            allow_pickle=False,
        )
        if trained.item_bias is not None:
            np.save(
                tmp / BIAS_FILE,
                np.ascontiguousarray(trained.item_bias, dtype=np.float32),
                allow_pickle=False,
            )
        if trained.item_categories is not None:
            np.save(
                tmp / CATEGORIES_FILE,
                category_codes(trained.item_categories),
                allow_pickle=False,
            )
        else:
            logger.warning(
                "artifact %s records no item categories (trained before the category filter): "
                "this version answers a filtered request with an error, and the gateway falls "
                "back to ALS for it; train the Two-Tower again to filter on the primary",
                meta["artifact_version"],
            )
        (tmp / "metadata.json").write_text(
            json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"
        )
        # The manifest goes in with the files, so no reader ever sees a version without one.
        write_manifest(tmp)
        compile_version(tmp)  # a polling server would reload after the import wrote it
        os.chmod(tmp, 0o755)
        os.rename(tmp, folder / str(version))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_configs(folder, versions_to_keep=keep)
    removed = prune_versions(repository, keep=keep)
    # The similar-items model serves the same version's item embeddings (same N, same policy).
    sync_similar(repository, versions_to_keep=keep)
    logger.info(
        "exported Two-Tower version %d to %s (removed %s)", version, folder / str(version), removed
    )
    return ExportResult(
        version=version,
        version_dir=folder / str(version),
        removed=removed,
        n_items=len(trained.item_ids),
    )


def prune_versions(repository: Path, *, keep: int) -> list[int]:
    """Delete all but the ``keep`` newest version folders; returns the deleted versions."""
    versions = list_versions(repository)
    doomed = versions[:-keep] if len(versions) > keep else []
    for v in doomed:
        shutil.rmtree(model_dir(repository) / str(v))
    return doomed
