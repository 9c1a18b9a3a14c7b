"""Save and load trained Two-Tower artifacts: safetensors + ``.npy`` + ``metadata.json`` (no pickle).

Layout (``layout.artifacts_dir / "two_tower"``)::

    two_tower/
      latest                       text file: the version to export and evaluate
      20261129T170501Z/
        model.safetensors          both towers' weights and buffers (state dict)
        user_vocab.npy, item_vocab.npy   int64 sorted ids; index i+1 in the embeddings
        country_vocab.npy          int64 sorted country codes (two_tower.contract.country_code)
        item_ids.npy               int64: the scored catalogue (= item_vocab)
        item_embeddings.npy        float32 (n_items, dim): item tower output, for offline use
        item_categories.npy        unicode: each item's category name ("" = unknown), in
                                   item_vocab order (absent in artifacts trained before the
                                   category filter; their exports cannot filter)
        popular_items.npy, popular_counts.npy   fallback ranking for users never seen
        item_bias.npy              float32, item_vocab order: the recent-popularity prior added
                                   to every score (two_tower.item_prior); absent: no prior
        neighbour_items.npy, neighbour_weights.npy   (n_items, 50): the item-neighbour term's
                                   tables (two_tower.item_neighbours), gamma in metadata
                                   ``neighbours``; absent: no term
        metadata.json              config, string vocabularies, params, metrics, data, versions

A version folder is written under a temporary name and renamed into place, and ``latest`` is
replaced atomically, so a reader never sees half an artifact.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cascade.runtime import artifact_store as store
from cascade.runtime.artifact_store import ArtifactError as ArtifactError
from cascade.runtime.artifact_store import id_map_sha256 as id_map_sha256
from cascade.runtime.artifact_store import new_version as new_version
from two_tower.item_neighbours import ItemNeighbours, NeighbourTerm
from two_tower.model import TowerEnsemble, TwoTower, build_two_tower
from two_tower.towers import StringVocab, TwoTowerConfig

logger = logging.getLogger(__name__)

# 2: the user tower over the whole history (attention pooling + sequence encoder); a version-1
# artifact's weights do not fit it, so it is refused by name instead of failing to load.
FORMAT_VERSION = 2
LATEST_FILE = store.LATEST_FILE
METADATA_FILE = store.METADATA_FILE
WEIGHTS_FILE = "model.safetensors"
ITEM_CATEGORIES = "item_categories"  # optional: artifacts before the category filter lack it
ITEM_BIAS = "item_bias"  # optional: artifacts before the prior (or with beta 0) lack it
# optional: the item-neighbour term's tables (two_tower.item_neighbours); absent when gamma is 0
NEIGHBOUR_ITEMS, NEIGHBOUR_WEIGHTS = "neighbour_items", "neighbour_weights"
_ARRAYS = (
    "user_vocab",
    "item_vocab",
    "country_vocab",
    "item_ids",
    "item_embeddings",
    "popular_items",
    "popular_counts",
)


@dataclass
class TrainedTwoTower:
    """A trained model with everything needed to score: vocabularies and item embeddings."""

    model: TwoTower | TowerEnsemble
    user_vocab: np.ndarray
    item_vocab: np.ndarray
    country_vocab: np.ndarray
    countries: list[str]  # the strings behind country_vocab, for humans
    categories: StringVocab
    item_embeddings: np.ndarray  # (n_items, dim) rows in item_vocab order
    popular_items: np.ndarray
    popular_counts: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    # Each item's category name in item_vocab order ("" = unknown); None: not recorded (an
    # artifact older than the category filter).
    item_categories: np.ndarray | None = None
    # The recent-popularity prior per item in item_vocab order (two_tower.item_prior); None: none.
    item_bias: np.ndarray | None = None
    # The item-neighbour term (two_tower.item_neighbours) and its weight; None / 0: none.
    neighbours: ItemNeighbours | None = None
    neighbour_gamma: float = 0.0

    def neighbour_term(self) -> NeighbourTerm | None:
        """The term the recommender and the export add to the scores, or None."""
        if self.neighbours is None or not self.neighbour_gamma:
            return None
        return NeighbourTerm(self.item_vocab, self.neighbours, self.neighbour_gamma)

    @property
    def item_ids(self) -> np.ndarray:
        return self.item_vocab


def root_dir(artifacts_dir: Path) -> Path:
    """The folder holding every Two-Tower version and the ``latest`` pointer."""
    return Path(artifacts_dir) / "two_tower"


def _library_versions() -> dict[str, str]:
    import safetensors
    import torch

    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }


def save_two_tower(
    trained: TrainedTwoTower, *, artifacts_dir: Path, update_latest: bool = True
) -> Path:
    """Write ``trained`` as a new version folder and (by default) point ``latest`` at it."""
    from safetensors.torch import save_file

    root = root_dir(artifacts_dir)
    root.mkdir(parents=True, exist_ok=True)
    version = base = new_version()
    n = 1
    while (root / version).exists():
        n += 1
        version = f"{base}-{n}"
    arrays = {name: getattr(trained, name) for name in _ARRAYS}
    if trained.item_categories is not None:
        arrays[ITEM_CATEGORIES] = np.asarray(trained.item_categories, dtype=str)
    if trained.item_bias is not None:
        arrays[ITEM_BIAS] = np.asarray(trained.item_bias, dtype=np.float32)
    if trained.neighbours is not None and trained.neighbour_gamma:
        arrays[NEIGHBOUR_ITEMS] = np.asarray(trained.neighbours.items, dtype=np.int64)
        arrays[NEIGHBOUR_WEIGHTS] = np.asarray(trained.neighbours.weights, dtype=np.float32)
    meta = dict(trained.metadata)
    meta.update(
        {
            "format_version": FORMAT_VERSION,
            "model_version": version,
            "trained_at": meta.get("trained_at") or datetime.now(UTC).isoformat(timespec="seconds"),
            "config": trained.model.cfg.to_dict(),
            "countries": trained.countries,
            "categories": trained.categories.values,
            "id_map_sha256": id_map_sha256(trained.user_vocab, trained.item_vocab),
            "shapes": {name: list(a.shape) for name, a in arrays.items()},
            "libraries": _library_versions(),
        }
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in trained.model.state_dict().items()}
        # Shared tensors (the item-id embedding used by both towers) are stored once.
        save_file(_dedupe_shared(state), str(tmp / WEIGHTS_FILE))
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        (tmp / METADATA_FILE).write_text(
            json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"
        )
        os.chmod(tmp, 0o755)
        os.rename(tmp, root / version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if update_latest:
        set_latest(artifacts_dir=artifacts_dir, version=version)
    logger.info("saved Two-Tower artifact %s", root / version)
    return root / version


def _dedupe_shared(state: dict[str, Any]) -> dict[str, Any]:
    seen: dict[int, str] = {}
    out = {}
    for key, tensor in state.items():
        ptr = tensor.data_ptr()
        if ptr in seen and tensor.numel() > 0:
            continue
        seen[ptr] = key
        out[key] = tensor
    return out


def set_latest(*, artifacts_dir: Path, version: str) -> None:
    """Atomically point ``latest`` at ``version``."""
    store.set_latest(root_dir(artifacts_dir), version, kind="Two-Tower")


def latest_dir(artifacts_dir: Path) -> Path:
    """The version folder ``latest`` points at; :class:`ArtifactError` when there is none."""
    return store.latest_dir(
        root_dir(artifacts_dir), kind="Two-Tower", command="cascade train two-tower"
    )


def read_metadata(directory: Path) -> dict[str, Any]:
    """Parsed ``metadata.json`` of a version folder, with a known format version."""
    path = Path(directory) / METADATA_FILE
    meta = store.read_metadata(directory, kind="Two-Tower")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {meta.get('format_version')} != {FORMAT_VERSION}"
        )
    return meta


def load_two_tower_artifact(directory: Path) -> TrainedTwoTower:
    """Load a version folder written by :func:`save_two_tower`; checks shapes and id maps."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = read_metadata(directory)
    arrays: dict[str, np.ndarray] = {}
    for name in _ARRAYS:
        path = directory / f"{name}.npy"
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: incomplete artifact")
        arrays[name] = np.load(path, allow_pickle=False)
        if list(arrays[name].shape) != meta["shapes"][name]:
            raise ArtifactError(
                f"{path}: shape {arrays[name].shape} != metadata {meta['shapes'][name]}"
            )
    categories_path = directory / f"{ITEM_CATEGORIES}.npy"
    item_categories = None
    if ITEM_CATEGORIES in meta["shapes"]:
        if not categories_path.is_file():
            raise ArtifactError(f"{categories_path} is missing: incomplete artifact")
        item_categories = np.load(categories_path, allow_pickle=False)
        if item_categories.shape != arrays["item_vocab"].shape or item_categories.dtype.kind != "U":
            raise ArtifactError(f"{categories_path}: not one category name per item")
    item_bias = None
    if ITEM_BIAS in meta["shapes"]:
        bias_path = directory / f"{ITEM_BIAS}.npy"
        if not bias_path.is_file():
            raise ArtifactError(f"{bias_path} is missing: incomplete artifact")
        item_bias = np.load(bias_path, allow_pickle=False)
        if item_bias.shape != arrays["item_vocab"].shape or not np.isfinite(item_bias).all():
            raise ArtifactError(f"{bias_path}: not one finite float per item")
    neighbours, gamma = _load_neighbours(directory, meta, len(arrays["item_vocab"]))
    if id_map_sha256(arrays["user_vocab"], arrays["item_vocab"]) != meta["id_map_sha256"]:
        raise ArtifactError(f"{directory}: id maps do not match metadata.json (id_map_sha256)")
    cfg = TwoTowerConfig.from_dict(meta["config"])
    model = build_two_tower(
        cfg,
        user_vocab=arrays["user_vocab"],
        item_vocab=arrays["item_vocab"],
        country_vocab=arrays["country_vocab"],
    )
    state = load_file(str(directory / WEIGHTS_FILE))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Keys dropped on save as aliases of a shared tensor are filled through that tensor.
    fresh = model.state_dict()
    loaded_ptrs = {fresh[k].data_ptr() for k in state if k in fresh}
    really_missing = [k for k in missing if fresh[k].data_ptr() not in loaded_ptrs]
    if really_missing or unexpected:
        raise ArtifactError(
            f"{directory}: weights do not match the config ({really_missing or unexpected})"
        )
    model.eval()
    return TrainedTwoTower(
        model=model,
        user_vocab=arrays["user_vocab"],
        item_vocab=arrays["item_vocab"],
        country_vocab=arrays["country_vocab"],
        countries=list(meta["countries"]),
        categories=StringVocab(meta["categories"]),
        item_embeddings=arrays["item_embeddings"].astype(np.float32),
        popular_items=arrays["popular_items"],
        popular_counts=arrays["popular_counts"],
        metadata=meta,
        item_categories=item_categories,
        item_bias=None if item_bias is None else item_bias.astype(np.float32),
        neighbours=neighbours,
        neighbour_gamma=gamma,
    )


def _load_neighbours(
    directory: Path, meta: dict[str, Any], n_items: int
) -> tuple[ItemNeighbours | None, float]:
    """The neighbour tables and gamma when the artifact has them, checked against the vocab."""
    if NEIGHBOUR_ITEMS not in meta["shapes"]:
        return None, 0.0
    tables = []
    for name in (NEIGHBOUR_ITEMS, NEIGHBOUR_WEIGHTS):
        path = directory / f"{name}.npy"
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: incomplete artifact")
        tables.append(np.load(path, allow_pickle=False))
    neighbours = ItemNeighbours(tables[0].astype(np.int64), tables[1].astype(np.float32))
    gamma = float((meta.get("neighbours") or {}).get("gamma", 0.0))
    try:
        neighbours.check(n_items)
        if not np.isfinite(gamma) or gamma < 0:
            raise ValueError(f"gamma {gamma} is not finite and >= 0")
    except ValueError as exc:
        raise ArtifactError(f"{directory}: bad item-neighbour term: {exc}") from exc
    return neighbours, gamma


def list_versions(artifacts_dir: Path) -> list[Path]:
    """Complete version folders, newest first."""
    return store.list_versions(root_dir(artifacts_dir))
