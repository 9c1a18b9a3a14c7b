"""``cascade features apply|materialize``: output, and errors as a message with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cascade.features import cli
from cascade.runtime.paths import Layout
from tests.features.conftest import DATASET

pytestmark = pytest.mark.integration

app = typer.Typer()
app.command("apply")(cli.apply)
app.command("materialize")(cli.materialize)
runner = CliRunner()


def test_apply_and_materialize(sqlite_store: str, layout: Layout, tiny_dataset: Path) -> None:
    result = runner.invoke(app, ["apply", "--dataset", DATASET])
    assert result.exit_code == 0, result.output
    assert "online store sqlite" in result.output
    result = runner.invoke(app, ["materialize", "--dataset", DATASET])
    assert result.exit_code == 0, result.output
    assert "into sqlite" in result.output and "(incremental)" in result.output
    result = runner.invoke(
        app, ["materialize", "--full", "--engine", "direct"], env={"CASCADE_DATASET": DATASET}
    )
    assert result.exit_code == 0, result.output
    assert "(full)" in result.output and "(direct)" in result.output


def test_missing_dataset_exits_2(sqlite_store: str, layout: Layout) -> None:
    for command in ("apply", "materialize"):
        result = runner.invoke(app, [command, "--dataset", "nope"])
        assert result.exit_code == 2
        assert "run `cascade data` first" in result.output
        assert "Traceback" not in result.output


def test_unreachable_redis_exits_2(
    project: str, layout: Layout, tiny_dataset: Path, monkeypatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    for command in ("apply", "materialize"):
        result = runner.invoke(app, [command, "--dataset", DATASET])
        assert result.exit_code == 2
        assert "unreachable" in result.output
        assert "Traceback" not in result.output


def test_bad_options_are_usage_errors(sqlite_store: str, layout: Layout) -> None:
    result = runner.invoke(app, ["materialize", "--end", "yesterday"])
    assert result.exit_code == 2
    assert "ISO 8601" in result.output
    result = runner.invoke(app, ["materialize", "--engine", "spark"])
    assert result.exit_code == 2
    assert "choose auto, feast or direct" in result.output
