"""ALS artifacts: round trip without pickle, versions and the latest pointer, tamper detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fallback_mf.artifacts import (
    ArtifactError,
    als_root,
    latest_dir,
    list_versions,
    load_als,
    load_latest,
    save_als,
)
from fallback_mf.train import train_als
from tests.contract import contract_interactions


@pytest.fixture(scope="module")
def model():
    return train_als(
        interactions=contract_interactions(), factors=4, iterations=2, threads=1, progress=False
    )


@pytest.fixture
def saved(model, tmp_path) -> Path:
    return save_als(
        model,
        artifacts_dir=tmp_path,
        extra_metadata={"data": {"checksum": "abc"}},
        version="20260101T000000Z",
    )


def test_round_trip(model, saved, tmp_path):
    loaded = load_latest(tmp_path)
    for name in ("user_factors", "item_factors", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    np.testing.assert_array_equal(loaded.seen.indptr, model.seen.indptr)
    np.testing.assert_array_equal(loaded.seen.indices, model.seen.indices)
    np.testing.assert_array_equal(loaded.popular.items, model.popular.items)
    users = model.user_ids
    np.testing.assert_array_equal(loaded.recommend(users, k=5)[0], model.recommend(users, k=5)[0])
    meta = loaded.metadata
    assert meta["model_version"] == "20260101T000000Z" and meta["format_version"] == 1
    assert meta["data"] == {"checksum": "abc"}
    assert {"trained_at", "id_map_sha256", "params", "libraries", "shapes", "metrics"} <= set(meta)


def test_files_are_plain_numpy_and_json(saved):
    names = sorted(p.name for p in saved.iterdir())
    assert "metadata.json" in names and all(n.endswith((".npy", ".json")) for n in names)
    for path in saved.glob("*.npy"):
        np.load(path, allow_pickle=False)  # raises if an object array slipped in


def test_versions_and_latest_pointer(model, saved, tmp_path):
    second = save_als(model, artifacts_dir=tmp_path, version="20260101T000000Z")  # same second
    assert second.name == "20260101T000000Z-2"
    assert latest_dir(tmp_path) == second
    assert [p.name for p in list_versions(tmp_path)] == [second.name, saved.name]
    third = save_als(model, artifacts_dir=tmp_path, update_latest=False)
    assert latest_dir(tmp_path) == second and third.is_dir()
    # no temporary folders or pointer files are left behind
    assert not [p for p in als_root(tmp_path).iterdir() if p.name.startswith(".")]


def test_missing_latest_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="run `cascade train mf`"):
        load_latest(tmp_path)


def _edit_metadata(directory: Path, **changes) -> None:
    path = directory / "metadata.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_tampered_id_map_checksum(saved):
    _edit_metadata(saved, id_map_sha256="0" * 64)
    with pytest.raises(ArtifactError, match="id maps do not match"):
        load_als(saved)


def test_replaced_id_map(saved):
    ids = np.load(saved / "item_ids.npy")
    np.save(saved / "item_ids.npy", ids + 1)
    with pytest.raises(ArtifactError, match="id_map_sha256"):
        load_als(saved)


def test_wrong_shape(saved):
    factors = np.load(saved / "item_factors.npy")
    np.save(saved / "item_factors.npy", factors[:-1])
    with pytest.raises(ArtifactError, match=r"item_factors.npy: shape .* does not match metadata"):
        load_als(saved)


def test_wrong_shape_with_matching_metadata(saved):
    factors = np.load(saved / "user_factors.npy")
    np.save(saved / "user_factors.npy", factors[:-1])
    meta = json.loads((saved / "metadata.json").read_text())
    meta["shapes"]["user_factors"] = list(factors[:-1].shape)
    (saved / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="user_factors rows"):
        load_als(saved)


def test_format_version_mismatch(saved):
    _edit_metadata(saved, format_version=99)
    with pytest.raises(ArtifactError, match="format_version"):
        load_als(saved)


def test_pickled_array_is_refused(saved):
    np.save(saved / "popular_items.npy", np.array([object()] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(ArtifactError, match="not a plain numpy array"):
        load_als(saved)


def test_missing_file_and_bad_json(saved):
    (saved / "seen_indices.npy").unlink()
    with pytest.raises(ArtifactError, match=r"seen_indices\.npy is missing"):
        load_als(saved)
    (saved / "metadata.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_als(saved)
