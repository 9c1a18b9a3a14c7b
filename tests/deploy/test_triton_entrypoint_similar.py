"""The Triton container loads the similar-items model next to the Two-Tower (issue 19):
``docker/triton-entrypoint.sh`` verifies and explicitly loads ``two_tower_similar`` when it has a
version, refuses to start on one that does not match its manifest, and starts without it before
its first export. Run for real with a stand-in ``tritonserver`` (tests/deploy/
test_triton_entrypoint.py has the rendering harness)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.deploy.test_triton_entrypoint import (
    ENTRYPOINT,
    TEST_KEY,
    entrypoint_env,
    flag,
    tiny_repository,
)
from two_tower import manifest


def with_similar(root: Path, versions: tuple[int, ...] = (1,)) -> Path:
    tiny_repository(root, versions)
    for version in versions:
        folder = root / "two_tower_similar" / str(version)
        folder.mkdir(parents=True)
        (folder / "model.py").write_text("class TritonPythonModel:\n    pass\n")
        manifest.write_manifest(folder)
    return root


def run(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    env = entrypoint_env(tmp_path, {"TRITON_ADMIN_KEY": TEST_KEY})
    done = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True)
    return done, env


def test_both_models_are_verified_and_loaded(tmp_path: Path) -> None:
    with_similar(tmp_path / "models")
    done, env = run(tmp_path)
    assert done.returncode == 0, done.stderr
    args = Path(env["ARGS_OUT"]).read_text().splitlines()
    assert sorted(flag(args, "--load-model")) == ["two_tower", "two_tower_similar"]
    assert flag(args, "--model-control-mode") == ["explicit"]


def test_a_tampered_similar_version_stops_the_container(tmp_path: Path) -> None:
    repo = with_similar(tmp_path / "models")
    (repo / "two_tower_similar" / "1" / "model.py").write_text("import os\nos.system('id')\n")
    done, env = run(tmp_path)
    assert done.returncode != 0 and "differs from the manifest" in done.stderr
    assert not Path(env["ARGS_OUT"]).exists(), "tritonserver must not start"


def test_a_repository_without_the_similar_model_still_starts(tmp_path: Path) -> None:
    tiny_repository(tmp_path / "models")
    done, env = run(tmp_path)
    assert done.returncode == 0, done.stderr
    args = Path(env["ARGS_OUT"]).read_text().splitlines()
    assert flag(args, "--load-model") == ["two_tower"]
    assert "no two_tower_similar version yet" in done.stderr


def test_the_loader_watches_each_model(tmp_path: Path) -> None:
    script = ENTRYPOINT.read_text()
    assert 'models="two_tower two_tower_similar"' in script
    assert '--model "${model}"' in script
