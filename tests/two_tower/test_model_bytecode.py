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
