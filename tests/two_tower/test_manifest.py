"""The version folder's sha256 manifest: written last, any difference refuses the load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from two_tower import manifest
from two_tower.manifest import ManifestError


def _version(model_dir: Path, version: int) -> Path:
    folder = model_dir / str(version)
    folder.mkdir(parents=True)
    (folder / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    (folder / "item_ids.npy").write_bytes(b"\x93NUMPY" + bytes(range(64)))
    (folder / "sub").mkdir()
    (folder / "sub" / "x.bin").write_bytes(b"x")
    return folder


def test_written_manifest_verifies_and_is_sha256sum_compatible(tmp_path: Path) -> None:
    folder = _version(tmp_path / "two_tower", 1)
    path = manifest.write_manifest(folder)
    assert path.name == manifest.MANIFEST_NAME
    manifest.verify_manifest(folder)
    assert sorted(manifest.read_manifest(folder)) == ["item_ids.npy", "model.py", "sub/x.bin"]
    check = subprocess.run(
        ["sha256sum", "--check", "--strict", manifest.MANIFEST_NAME],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("change", ["edit", "extra", "missing", "no_manifest", "symlink"])
def test_any_difference_is_refused(tmp_path: Path, change: str) -> None:
    folder = _version(tmp_path / "two_tower", 1)
    manifest.write_manifest(folder)
    if change == "edit":
        (folder / "model.py").write_text("import os; os.system('id')\n")
    elif change == "extra":
        (folder / "evil.py").write_text("print('hi')\n")
    elif change == "missing":
        (folder / "sub" / "x.bin").unlink()
    elif change == "no_manifest":
        (folder / manifest.MANIFEST_NAME).unlink()
    else:
        (folder / "link.py").symlink_to(folder / "model.py")
    with pytest.raises(ManifestError):
        manifest.verify_manifest(folder)


def test_manifest_paths_may_not_leave_the_folder(tmp_path: Path) -> None:
    folder = _version(tmp_path / "two_tower", 1)
    (folder / manifest.MANIFEST_NAME).write_text("0" * 64 + "  ../../etc/passwd\n")
    with pytest.raises(ManifestError, match="leaves the folder"):
        manifest.read_manifest(folder)


def test_pycache_is_ignored(tmp_path: Path) -> None:
    folder = _version(tmp_path / "two_tower", 1)
    manifest.write_manifest(folder)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    manifest.verify_manifest(folder)


def test_verify_model_checks_every_version(tmp_path: Path) -> None:
    model_dir = tmp_path / "two_tower"
    with pytest.raises(ManifestError, match="no version"):
        manifest.verify_model(model_dir)
    manifest.write_manifest(_version(model_dir, 1))
    manifest.write_manifest(_version(model_dir, 2))
    assert manifest.verify_model(model_dir) == [1, 2]
    (model_dir / "1" / "model.py").write_text("tampered\n")
    with pytest.raises(ManifestError):
        manifest.verify_model(model_dir)


def test_fingerprint_changes_with_a_new_or_rewritten_version(tmp_path: Path) -> None:
    model_dir = tmp_path / "two_tower"
    manifest.write_manifest(_version(model_dir, 1))
    first = manifest.fingerprint(model_dir)
    folder = _version(model_dir, 2)
    second = manifest.fingerprint(model_dir)
    assert second != first and second[-1] == (2, "")
    manifest.write_manifest(folder)
    assert manifest.fingerprint(model_dir) != second


def test_script_cli_runs_on_the_standard_library_alone(tmp_path: Path) -> None:
    """The Triton image runs the file as a script (/opt/cascade/model_manifest.py), no package."""
    model_dir = tmp_path / "two_tower"
    _version(model_dir, 1)
    script = tmp_path / "model_manifest.py"
    script.write_text(Path(manifest.__file__).read_text())
    env = {"PATH": os.environ["PATH"]}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", str(script), *args], capture_output=True, text=True, env=env
        )

    assert run("verify", str(model_dir)).returncode == 1
    assert run("write-newest", str(model_dir)).returncode == 0
    ok = run("verify", str(model_dir))
    assert ok.returncode == 0, ok.stderr
    assert run("watch", str(model_dir), "--url", "http://127.0.0.1:1").returncode == 1  # no key
    env["TRITON_ADMIN_KEY"] = "k"
    (model_dir / "1" / "model.py").write_text("tampered\n")
    refused = run("load", str(model_dir), "--url", "http://127.0.0.1:1")
    assert refused.returncode == 1 and "differs from the manifest" in refused.stderr


def test_watch_retries_an_unreachable_triton_and_loads_once_it_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_model`` replaced by a recorder (a fake: no Triton here; the real one is exercised
    in tests/integration/test_triton_admin_api.py). No sleeps: ``time.sleep`` is a no-op."""
    model_dir = tmp_path / "two_tower"
    manifest.write_manifest(_version(model_dir, 1))
    calls: list[str] = []
    outcomes: list[BaseException | None] = [ConnectionRefusedError("down"), None]

    def fake_load(url: str, model: str, *, admin_key: str, timeout: float = 300.0) -> None:
        calls.append(model)
        outcome = outcomes.pop(0) if outcomes else None
        if outcome is not None:
            raise outcome

    def sleep(_: float) -> None:
        if len(calls) == 0 and not (model_dir / "2").exists():
            manifest.write_manifest(_version(model_dir, 2))

    monkeypatch.setattr(manifest, "load_model", fake_load)
    monkeypatch.setattr(manifest.time, "sleep", sleep)
    manifest.watch(
        model_dir=model_dir, url="u", model="two_tower", admin_key="k", interval=0, iterations=4
    )
    assert calls == ["two_tower", "two_tower"], "retried after the refused connection, then done"


def test_watch_does_not_load_a_tampered_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "two_tower"
    manifest.write_manifest(_version(model_dir, 1))
    calls: list[str] = []
    monkeypatch.setattr(manifest, "load_model", lambda *a, **k: calls.append("load"))

    def sleep(_: float) -> None:
        if not (model_dir / "2").exists():
            folder = _version(model_dir, 2)
            manifest.write_manifest(folder)
            (folder / "model.py").write_text("tampered\n")

    monkeypatch.setattr(manifest.time, "sleep", sleep)
    manifest.watch(
        model_dir=model_dir, url="u", model="two_tower", admin_key="k", interval=0, iterations=3
    )
    assert calls == []
