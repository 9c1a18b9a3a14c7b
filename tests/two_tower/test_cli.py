"""The Two-Tower commands fail with one clear line and exit 2 when there is nothing to work on."""

from __future__ import annotations

from typer.testing import CliRunner

from cascade.cli import app


def test_export_without_artifact_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    result = CliRunner().invoke(
        app, ["export", "two-tower", "--repository", str(tmp_path / "repo")]
    )
    assert result.exit_code == 2
    assert "cascade train two-tower" in result.output


def test_serve_without_versions_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", "triton", "--repository", str(tmp_path)])
    assert result.exit_code == 2
    assert "cascade export two-tower" in result.output


def test_train_rejects_unknown_engine():
    result = CliRunner().invoke(app, ["train", "two-tower", "--engine", "spark"])
    assert result.exit_code == 2


def test_export_refuses_an_artifact_trained_with_other_feature_settings(
    tmp_path, monkeypatch, tiny_trained
):
    import json

    from two_tower.artifacts import save_two_tower

    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    folder = save_two_tower(tiny_trained, artifacts_dir=tmp_path / "artifacts")
    meta_path = folder / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["features"]["max_seen_items"] = 200
    meta_path.write_text(json.dumps(meta))
    repo = tmp_path / "repo"
    result = CliRunner().invoke(
        app, ["export", "two-tower", "--repository", str(repo), "--artifact", str(folder)]
    )
    assert result.exit_code == 2, result.output
    assert "max_seen_items 200 (this build: 500)" in result.output
    assert not (repo / "two_tower" / "1").exists()
