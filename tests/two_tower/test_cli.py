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
