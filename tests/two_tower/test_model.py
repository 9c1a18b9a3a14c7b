"""Two-Tower training: the recommender contract, determinism, artifacts round trip, export."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from tests.contract import RecommenderContract, contract_interactions
from tests.two_tower.conftest import TINY
from two_tower.artifacts import ArtifactError, load_two_tower_artifact, save_two_tower
from two_tower.export import ExportError, export_to_triton, list_versions
from two_tower.recommender import TwoTowerRecommender


class TestTwoTowerContract(RecommenderContract):
    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls):
        return contract_interactions()

    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, tiny_trained, train_interactions):
        return TwoTowerRecommender.from_trained(tiny_trained, interactions=train_interactions)


class TestLoadedTwoTowerContract(RecommenderContract):
    @pytest.fixture(scope="class")
    @classmethod
    def train_interactions(cls):
        return contract_interactions()

    @pytest.fixture(scope="class")
    @classmethod
    def recommender(cls, tiny_trained, train_interactions, tmp_path_factory):
        folder = save_two_tower(tiny_trained, artifacts_dir=tmp_path_factory.mktemp("artifacts"))
        loaded = load_two_tower_artifact(folder)
        return TwoTowerRecommender.from_trained(loaded, interactions=train_interactions)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_is_deterministic_on_cpu(tiny_interactions):
    from two_tower.pipeline import train_in_memory

    a = train_in_memory(tiny_interactions, params=TINY)
    b = train_in_memory(tiny_interactions, params=TINY)
    pa, pb = _params(a.model), _params(b.model)
    assert pa.keys() == pb.keys()
    for key in pa:
        assert torch.equal(pa[key], pb[key]), key
    assert np.array_equal(a.item_embeddings, b.item_embeddings)


def test_another_seed_gives_other_weights(tiny_interactions, tiny_trained):
    from dataclasses import replace

    from two_tower.pipeline import train_in_memory

    other = train_in_memory(tiny_interactions, params=replace(TINY, seed=7))
    assert not np.array_equal(other.item_embeddings, tiny_trained.item_embeddings)


def test_vectors_are_unit_length(tiny_trained):
    norms = np.linalg.norm(tiny_trained.item_embeddings, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


def test_artifact_round_trip_and_tamper_detection(tiny_trained, tmp_path):
    folder = save_two_tower(tiny_trained, artifacts_dir=tmp_path)
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["config"]["dim"] == TINY.dim and "libraries" in meta
    loaded = load_two_tower_artifact(folder)
    for key, value in tiny_trained.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    np.save(folder / "item_vocab.npy", tiny_trained.item_vocab[::-1].copy(), allow_pickle=False)
    with pytest.raises(ArtifactError, match="id maps"):
        load_two_tower_artifact(folder)


def test_export_writes_versions_and_keeps_the_newest(tiny_trained, tmp_path):
    repo = tmp_path / "repo"
    template_dir = repo / "two_tower"
    template_dir.mkdir(parents=True)
    from two_tower.export import TEMPLATE_NAME, model_dir
    from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY

    (template_dir / TEMPLATE_NAME).write_text(
        (model_dir(DEFAULT_MODEL_REPOSITORY) / TEMPLATE_NAME).read_text()
    )
    for expected in (1, 2, 3):
        result = export_to_triton(tiny_trained, repository=repo, keep=2)
        assert result.version == expected
    assert list_versions(repo) == [2, 3]
    version = repo / "two_tower" / "3"
    for name in (
        "model.py",
        "user_tower.pt",
        "item_embeddings.npy",
        "item_ids.npy",
        "metadata.json",
    ):
        assert (version / name).is_file(), name
    assert "latest { num_versions: 2 }" in (repo / "two_tower" / "config.pbtxt").read_text()
    # the scripted tower gives the eager tower's vectors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(version / "user_tower.pt"))
    n = 4
    args = (
        torch.arange(n, dtype=torch.int64),
        torch.full((n,), -1),
        torch.zeros(n, dtype=torch.int64),
        torch.arange(n, dtype=torch.int64),
        torch.full((n, 20), 100),
        torch.full((n, 500), -1),
    )
    with torch.no_grad():
        assert torch.equal(scripted(*args), tiny_trained.model.user_tower(*args))


def test_export_without_template_fails_clearly(tiny_trained, tmp_path):
    with pytest.raises(ExportError, match="template"):
        export_to_triton(tiny_trained, repository=tmp_path)


def test_item_categories_survive_the_artifact_and_become_codes_in_the_export(
    tiny_trained, tmp_path
):
    """Training records each item's category name; the export writes their
    ``contract.category_code`` beside the embeddings; an artifact without names (trained before
    the category filter) loads with None and exports no codes."""
    import dataclasses
    import json

    import numpy as np

    from two_tower import contract
    from two_tower.export import CATEGORIES_FILE, TEMPLATE_NAME, model_dir
    from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY

    assert tiny_trained.item_categories is not None  # train_in_memory: all unknown ("")
    names = np.asarray([f"g{i % 3}" for i in tiny_trained.item_ids], dtype=str)
    named = dataclasses.replace(tiny_trained, item_categories=names)
    loaded = load_two_tower_artifact(save_two_tower(named, artifacts_dir=tmp_path / "a"))
    assert loaded.item_categories is not None and loaded.item_categories.tolist() == names.tolist()
    old = dataclasses.replace(tiny_trained, item_categories=None)
    assert (
        load_two_tower_artifact(save_two_tower(old, artifacts_dir=tmp_path / "b")).item_categories
        is None
    )

    repo = tmp_path / "repo"
    model_dir(repo).mkdir(parents=True)
    (model_dir(repo) / TEMPLATE_NAME).write_text(
        (model_dir(DEFAULT_MODEL_REPOSITORY) / TEMPLATE_NAME).read_text()
    )
    with_codes = export_to_triton(loaded, repository=repo).version_dir
    codes = np.load(with_codes / CATEGORIES_FILE, allow_pickle=False)
    assert codes.dtype == np.int64 and codes.tolist() == [contract.category_code(n) for n in names]
    assert json.loads((with_codes / "metadata.json").read_text())["item_categories"] is True
    without = export_to_triton(old, repository=repo).version_dir
    assert not (without / CATEGORIES_FILE).exists()
    assert json.loads((without / "metadata.json").read_text())["item_categories"] is False
