"""A version folder stays as Triton scanned it: its ``model.py`` bytecode is written before the
server imports it (else the import writes it, and a polling server reloads the model)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from two_tower.model_bytecode import compile_repository


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def _import_like_the_stub(version_dir: Path) -> None:
    """The backend stub puts the version folder on sys.path and imports ``model``; here the
    import fails past the compile step (no Triton utilities), which is when bytecode is written.
    The stub does not honour PYTHONDONTWRITEBYTECODE (measured), so the test does not either."""
    code = f"import sys; sys.path.insert(0, {str(version_dir)!r})\ntry:\n import model\nexcept Exception:\n pass"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_compiled_versions_are_not_written_by_the_import(tmp_path: Path) -> None:
    for model in ("two_tower", "two_tower_similar"):
        version = tmp_path / model / "3"
        version.mkdir(parents=True)
        (version / "model.py").write_text("import triton_python_backend_utils\nX = 1\n")
    (tmp_path / "two_tower" / "config.pbtxt").write_text("")  # not a version: left alone
    untouched = tmp_path / "two_tower" / "3"
    _import_like_the_stub(untouched)
    assert (untouched / "__pycache__").is_dir()  # what the stub does to an uncompiled folder

    compile_repository(tmp_path)
    for model in ("two_tower", "two_tower_similar"):
        version = tmp_path / model / "3"
        before = _snapshot(version)
        _import_like_the_stub(version)
        assert _snapshot(version) == before


def test_an_exported_version_carries_its_bytecode(tmp_path: Path, tiny_trained) -> None:
    """A version exported into a running server's repository goes live compiled: the server
    loads it once, not a second time one poll after its first request."""
    import shutil

    from two_tower.export import export_to_triton
    from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY

    for model in ("two_tower", "two_tower_similar"):  # the tracked templates, as a checkout has
        (tmp_path / model).mkdir()
        shutil.copy(DEFAULT_MODEL_REPOSITORY / model / "model.py", tmp_path / model / "model.py")
    result = export_to_triton(tiny_trained, repository=tmp_path)
    for model in ("two_tower", "two_tower_similar"):
        version = tmp_path / model / str(result.version)
        assert version.is_dir()
        before = _snapshot(version)
        assert any(p.suffix == ".pyc" for p in version.rglob("*"))
        _import_like_the_stub(version)
        assert _snapshot(version) == before
