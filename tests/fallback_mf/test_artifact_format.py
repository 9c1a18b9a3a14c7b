"""``fallback_mf.artifact_format``: names shared with the writer, the one ``latest`` rule (text
file or symlink), the readers, and its promise to import only the standard library and numpy."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from cascade.runtime import artifact_store
from fallback_mf import artifact_format as fmt
from fallback_mf.artifacts import ArtifactError, latest_dir, save_als
from fallback_mf.model import AlsModel
from tests.fallback_mf.service_helpers import tiny_model


@pytest.fixture(scope="module")
def model() -> AlsModel:
    return tiny_model(seed=1)


@pytest.fixture
def saved(model: AlsModel, tmp_path: Path) -> Path:
    return save_als(model, artifacts_dir=tmp_path, version="v1")


def test_imports_only_stdlib_numpy_and_the_runtime_core() -> None:
    tree = ast.parse(Path(fmt.__file__).read_text())
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            tops.add(node.module)
    outside = {m for m in tops if m.split(".")[0] not in sys.stdlib_module_names}
    assert {m for m in outside if not m.startswith("cascade.runtime")} <= {"numpy", "__future__"}


def test_names_agree_with_the_writer(saved: Path, tmp_path: Path) -> None:
    assert fmt.LATEST_FILE == artifact_store.LATEST_FILE  # the writer's set_latest uses these
    assert fmt.METADATA_FILE == artifact_store.METADATA_FILE
    files = {p.name for p in saved.iterdir()}
    assert files == {fmt.array_path(saved, n).name for n in fmt.ARRAY_NAMES} | {fmt.METADATA_FILE}
    assert saved.parent == fmt.als_root(tmp_path)
    assert (fmt.als_root(tmp_path) / fmt.LATEST_FILE).read_text() == "v1\n"


def test_read_checked_returns_every_array_and_the_metadata(model: AlsModel, saved: Path) -> None:
    arrays, meta = fmt.read_checked(saved)
    assert set(arrays) == set(fmt.ARRAY_NAMES) and meta["model_version"] == "v1"
    np.testing.assert_array_equal(arrays[fmt.ITEM_FACTORS], model.item_factors)
    (saved / fmt.METADATA_FILE).unlink()
    with pytest.raises(fmt.ArtifactFormatError, match=r"metadata\.json is missing"):
        fmt.read_checked(saved)


def test_latest_as_text_file(saved: Path) -> None:
    assert fmt.resolve_latest(saved.parent) == saved


@pytest.mark.parametrize("absolute", [False, True])
def test_latest_as_symlink(model: AlsModel, saved: Path, tmp_path: Path, absolute: bool) -> None:
    v2 = save_als(model, artifacts_dir=tmp_path, version="v2", update_latest=False)
    pointer = saved.parent / fmt.LATEST_FILE
    pointer.unlink()
    pointer.symlink_to(v2 if absolute else Path(v2.name))
    assert fmt.resolve_latest(saved.parent) == v2
    assert latest_dir(tmp_path) == v2  # the writer side follows the same rule


def test_symlink_outside_the_root_is_refused(saved: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "v1"
    elsewhere.mkdir(parents=True)
    pointer = saved.parent / fmt.LATEST_FILE
    pointer.unlink()
    pointer.symlink_to(elsewhere)
    with pytest.raises(fmt.ArtifactFormatError, match="not to a version folder in"):
        fmt.resolve_latest(saved.parent)


def test_missing_latest_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(fmt.ArtifactFormatError, match=r"missing \(run `cascade train mf`\)"):
        fmt.resolve_latest(tmp_path)
    with pytest.raises(ArtifactError, match="run `cascade train mf`"):
        latest_dir(tmp_path)


@pytest.mark.parametrize("content", ["", "\n", "../v1", "a/b", ".v1-tmp", "..", "\x00"])
def test_latest_naming_no_version_is_refused(saved: Path, content: str) -> None:
    (saved.parent / fmt.LATEST_FILE).write_text(content)
    with pytest.raises(fmt.ArtifactFormatError, match="does not name a version folder"):
        fmt.resolve_latest(saved.parent)


def test_latest_that_is_a_folder_or_unreadable_is_refused(saved: Path) -> None:
    pointer = saved.parent / fmt.LATEST_FILE
    pointer.write_bytes(b"\xff\xfe")
    with pytest.raises(fmt.ArtifactFormatError, match="cannot read"):
        fmt.resolve_latest(saved.parent)
    pointer.unlink()
    pointer.mkdir()
    with pytest.raises(fmt.ArtifactFormatError, match="neither a text file nor a symlink"):
        fmt.resolve_latest(saved.parent)


@pytest.mark.parametrize("mmap", [False, True])
def test_readers_return_what_was_written(model: AlsModel, saved: Path, mmap: bool) -> None:
    items, counts = fmt.read_popular(saved)
    assert items.dtype == counts.dtype == np.int64
    np.testing.assert_array_equal(items, model.popular.items)
    np.testing.assert_array_equal(counts, model.popular.counts)
    np.testing.assert_array_equal(fmt.read_item_ids(saved, mmap=mmap), model.item_ids)
    np.testing.assert_array_equal(fmt.read_user_ids(saved, mmap=mmap), model.user_ids)
    seen = fmt.read_seen(saved, mmap=mmap)
    assert isinstance(seen.indices, np.memmap) is mmap
    for position, user in enumerate(model.user_ids):
        np.testing.assert_array_equal(seen.item_indices(int(user)), model.seen.row(position))
    assert seen.item_indices(7).dtype == np.int64 and len(seen.item_indices(7)) == 0
    assert len(seen.item_indices(10**12)) == 0


def test_readers_refuse_pickles_and_name_missing_files(saved: Path) -> None:
    np.save(saved / "popular_items.npy", np.array([object()] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(fmt.ArtifactFormatError, match="not a plain numpy array"):
        fmt.read_popular(saved)
    os.remove(saved / "item_ids.npy")
    with pytest.raises(fmt.ArtifactFormatError, match=r"item_ids\.npy is missing"):
        fmt.read_item_ids(saved)
    assert issubclass(fmt.ArtifactFormatError, ValueError)  # what the gateway catches on load


def test_popular_items_and_counts_must_match(saved: Path) -> None:
    np.save(saved / "popular_counts.npy", np.arange(3, dtype=np.int64))
    with pytest.raises(fmt.ArtifactFormatError, match="differ in shape"):
        fmt.read_popular(saved)
