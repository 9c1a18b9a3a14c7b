"""The ``two_tower_similar`` Triton model without a server: its committed configs agree with
``two_tower/similar_contract.py``, the export mirrors the Two-Tower's versions (same N, manifest,
pruning), and the template's ``execute`` (run here against a stand-in of Triton's
``triton_python_backend_utils``) answers exact cosine top-k, never the query item.

A real tritonserver serves it in tests/two_tower/test_similar_triton_integration.py."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.dlpack import from_dlpack, to_dlpack

from two_tower import contract, similar_contract
from two_tower.manifest import verify_model, write_manifest
from two_tower.similar_export import (
    SimilarExportError,
    list_versions,
    model_dir,
    render_config,
    sync_versions,
)
from two_tower.triton_config import GPU_CONFIG_NAME

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "triton_models" / similar_contract.MODEL_NAME
TEMPLATE = MODEL_DIR / "model.py"


def test_committed_configs_are_generated_from_the_contract() -> None:
    assert (MODEL_DIR / "config.pbtxt").read_text() == render_config(kind="KIND_CPU")
    gpu = (MODEL_DIR / "configs" / f"{GPU_CONFIG_NAME}.pbtxt").read_text()
    assert gpu == render_config(kind="KIND_GPU") and "kind: KIND_GPU" in gpu


def test_config_names_every_tensor_and_marks_exclude_optional() -> None:
    text = render_config()
    for spec in similar_contract.INPUTS + similar_contract.OUTPUTS:
        block = text[text.index(f'name: "{spec.name}"') :]
        block = block[: block.index("}")]
        assert f"dims: [ {', '.join(map(str, spec.dims))} ]" in block
        assert f"data_type: TYPE_{spec.dtype}" in block
        assert ("optional: true" in block) == (spec.name in similar_contract.OPTIONAL_INPUTS)
    assert f'name: "{similar_contract.MODEL_NAME}"' in text
    assert "latest { num_versions: 2 }" in text and "dynamic_batching" in text


def test_the_template_spells_the_unknown_item_message_of_the_contract() -> None:
    assert (
        f'UNKNOWN_ITEM_MESSAGE = "{similar_contract.UNKNOWN_ITEM_MESSAGE}"' in TEMPLATE.read_text()
    )


def test_the_limits_fit_the_gateway() -> None:
    from gateway.settings import GatewaySettings

    assert GatewaySettings.model_fields["max_k"].metadata  # bounded by the user contract's MAX_K
    assert similar_contract.MAX_K == contract.MAX_K


# -- the export -----------------------------------------------------------------------------------


def fake_two_tower_version(repo: Path, version: int, n_items: int = 30, dim: int = 4) -> None:
    folder = repo / contract.MODEL_NAME / str(version)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(version)
    emb = rng.standard_normal((n_items, dim)).astype(np.float32)
    np.save(folder / "item_embeddings.npy", emb / np.linalg.norm(emb, axis=1, keepdims=True))
    np.save(folder / "item_ids.npy", np.arange(n_items, dtype=np.int64) * 10)
    (folder / "metadata.json").write_text(
        json.dumps({"artifact_version": f"a{version}", "dim": dim, "n_items": n_items})
    )
    (folder / "model.py").write_text("# stand-in\n")
    write_manifest(folder)


def test_sync_mirrors_the_two_tower_versions(tmp_path: Path) -> None:
    fake_two_tower_version(tmp_path, 1)
    fake_two_tower_version(tmp_path, 2)
    result = sync_versions(tmp_path, versions_to_keep=2)
    assert result.added == [1, 2] and result.removed == []
    assert verify_model(model_dir(tmp_path)) == [1, 2]  # each with a manifest that verifies
    folder = model_dir(tmp_path)
    assert (folder / "config.pbtxt").read_text() == render_config()
    assert (folder / "model.py").read_text() == TEMPLATE.read_text()
    meta = json.loads((folder / "2" / "metadata.json").read_text())
    assert meta["contract"] == similar_contract.fingerprint() and meta["source_version"] == 2
    assert meta["artifact_version"] == "a2" and meta["max_k"] == similar_contract.MAX_K
    source = tmp_path / contract.MODEL_NAME / "2" / "item_embeddings.npy"
    assert (folder / "2" / "item_embeddings.npy").read_bytes() == source.read_bytes()
    # nothing to do the second time
    assert sync_versions(tmp_path) == type(result)(added=[], removed=[])
    # the Two-Tower's version 1 pruned, a version 3 exported
    import shutil

    shutil.rmtree(tmp_path / contract.MODEL_NAME / "1")
    fake_two_tower_version(tmp_path, 3)
    result = sync_versions(tmp_path, versions_to_keep=3)
    assert result.added == [3] and result.removed == [1]
    assert list_versions(tmp_path) == [2, 3]
    assert "latest { num_versions: 3 }" in (folder / "config.pbtxt").read_text()


def test_sync_refuses_an_incomplete_two_tower_version(tmp_path: Path) -> None:
    (tmp_path / contract.MODEL_NAME / "1").mkdir(parents=True)
    with pytest.raises(SimilarExportError, match="not a complete Two-Tower version"):
        sync_versions(tmp_path)
    assert list_versions(tmp_path) == []  # no half-written folder


def test_the_export_writes_the_similar_model_with_the_same_version(
    tiny_trained, tmp_path: Path
) -> None:
    from two_tower.export import export_to_triton
    from two_tower.export import model_dir as two_tower_dir

    two_tower_dir(tmp_path).mkdir()
    (two_tower_dir(tmp_path) / "model.py").write_text(
        (REPO / "triton_models" / contract.MODEL_NAME / "model.py").read_text()
    )
    for _ in range(3):
        export_to_triton(tiny_trained, repository=tmp_path, keep=2)
    assert list_versions(tmp_path) == [2, 3]
    assert verify_model(model_dir(tmp_path)) == [2, 3]
    ids = np.load(model_dir(tmp_path) / "3" / "item_ids.npy")
    np.testing.assert_array_equal(ids, np.asarray(tiny_trained.item_ids, dtype=np.int64))


# -- the template, against a stand-in of Triton's Python-backend module ---------------------------


class _Tensor:
    def __init__(self, name: str, value: torch.Tensor) -> None:
        self.name, self.value = name, value

    def to_dlpack(self):
        return to_dlpack(self.value)

    @classmethod
    def from_dlpack(cls, name: str, capsule) -> _Tensor:
        return cls(name, from_dlpack(capsule))


class _Response:
    def __init__(self, output_tensors, error=None) -> None:
        self.outputs = {t.name: t.value.numpy() for t in output_tensors}
        self.error = error


class _Error:
    INVALID_ARG = 3

    def __init__(self, message, code=None) -> None:
        self.message, self.code = message, code


def _fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _Tensor
    module.InferenceResponse = _Response
    module.TritonError = _Error
    module.get_input_tensor_by_name = lambda request, name: request.get(name)
    module.Logger = types.SimpleNamespace(log_info=lambda message: None)
    return module


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_two_tower_version(tmp_path, 1, n_items=30)
    sync_versions(tmp_path)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    spec = importlib.util.spec_from_file_location("similar_template", TEMPLATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    instance = module.TritonPythonModel()
    config = {"parameters": {"torch_num_threads": {"string_value": "1"}}}
    instance.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(model_dir(tmp_path)),
            "model_version": "1",
            "model_instance_kind": "CPU",
        }
    )
    return instance, tmp_path / contract.MODEL_NAME / "1"


def request(item_id: int, k: int, exclude: list[int] | None = None) -> dict:
    rows = {
        "item_id": _Tensor("item_id", torch.tensor([[item_id]], dtype=torch.int64)),
        "k": _Tensor("k", torch.tensor([[k]], dtype=torch.int32)),
    }
    if exclude is not None:
        padded = exclude + [-1] * (similar_contract.MAX_EXCLUDE_ITEMS - len(exclude))
        rows["exclude_items"] = _Tensor("exclude_items", torch.tensor([padded]))
    return rows


def expected(folder: Path, item_id: int, k: int, exclude=()) -> tuple[list[int], np.ndarray]:
    ids = np.load(folder / "item_ids.npy")
    emb = np.load(folder / "item_embeddings.npy")
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    pos = int(np.searchsorted(ids, item_id))
    scores = emb @ emb[pos]
    scores[pos] = -np.inf
    scores[np.isin(ids, list(exclude))] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order].tolist(), scores[order]


def test_execute_answers_exact_cosine_top_k_per_request(model) -> None:
    instance, folder = model
    responses = instance.execute(
        [request(50, 5), request(0, 3, exclude=[10, 20]), request(7, 4), request(290, 40)]
    )
    assert [r.error for r in responses[:2]] == [None, None]
    ids, scores = expected(folder, 50, 5)
    assert responses[0].outputs["item_ids"].tolist() == [ids]
    np.testing.assert_allclose(responses[0].outputs["scores"][0], scores, rtol=1e-5, atol=1e-6)
    excluded = responses[1].outputs["item_ids"][0].tolist()
    assert excluded == expected(folder, 0, 3, exclude=(10, 20))[0]
    assert not {0, 10, 20} & set(excluded)
    # an unknown id (7 is not a multiple of 10) is its own error; the others are unaffected
    assert responses[2].error.code == _Error.INVALID_ARG
    assert responses[2].error.message.startswith(similar_contract.UNKNOWN_ITEM_MESSAGE)
    # k beyond the catalogue: every other item, then -1 / -inf padding
    tail_ids = responses[3].outputs["item_ids"][0]
    assert len(tail_ids) == 40 and (tail_ids[29:] == -1).all() and 290 not in tail_ids
    assert np.isneginf(responses[3].outputs["scores"][0][29:]).all()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda: request(10, 0), "out of range"),
        (lambda: request(10, similar_contract.MAX_K + 1), "out of range"),
        (lambda: request(-3, 2), "invalid item_id"),
        (lambda: request(10, 2, exclude=[-5]), "invalid item id in exclude_items"),
        (lambda: {"k": request(10, 2)["k"]}, "missing input 'item_id'"),
    ],
)
def test_bad_requests_get_invalid_arg_errors(model, bad, message: str) -> None:
    instance, _ = model
    good, wrong = instance.execute([request(10, 2), bad()])
    assert good.error is None and good.outputs["item_ids"].shape == (1, 2)
    assert wrong.error.code == _Error.INVALID_ARG and message in wrong.error.message


def test_a_local_server_gets_the_similar_versions_before_it_starts(tmp_path: Path) -> None:
    """A repository exported before the similar model existed: its folder (config, template)
    but no versions; poll mode would stop Triton on that, so TritonProcess syncs first."""
    from two_tower.triton_server import TritonNotInstalledError, TritonProcess, TritonSettings

    fake_two_tower_version(tmp_path, 4)
    (model_dir(tmp_path) / "configs").mkdir(parents=True)
    (model_dir(tmp_path) / "config.pbtxt").write_text(render_config())
    settings = TritonSettings(model_repository=tmp_path, backends_dir=tmp_path / "backends")
    try:
        TritonProcess(settings, log_path=tmp_path / "triton.log")  # not started
    except TritonNotInstalledError:
        pytest.skip("nvidia-pytriton is not installed")
    assert list_versions(tmp_path) == [4]


def test_a_repository_without_the_similar_model_is_left_alone(tmp_path: Path) -> None:
    from two_tower.triton_server import TritonNotInstalledError, TritonProcess, TritonSettings

    fake_two_tower_version(tmp_path, 1)
    settings = TritonSettings(model_repository=tmp_path, backends_dir=tmp_path / "backends")
    try:
        TritonProcess(settings, log_path=tmp_path / "triton.log")
    except TritonNotInstalledError:
        pytest.skip("nvidia-pytriton is not installed")
    assert not model_dir(tmp_path).exists()
