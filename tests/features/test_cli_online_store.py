"""The features commands and `cascade up` choose the online store by one rule (issue 19: after
`make up` used Redis, `cascade features materialize` without REDIS_URL used SQLite and failed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade.cli import app


def test_features_commands_use_redis_at_the_default_url_when_it_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cascade import stack_build

    monkeypatch.setenv("REDIS_URL", "")  # unset in effect; restored after the test
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    monkeypatch.setattr(stack_build, "redis_reachable", lambda url, **_: True)
    CliRunner().invoke(app, ["features", "apply", "--dataset", "nothing-here"])
    assert os.environ.get("REDIS_URL") == stack_build.DEFAULT_REDIS_URL


def test_without_a_redis_url_they_fall_back_to_sqlite_when_redis_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cascade import stack_build

    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    monkeypatch.setattr(stack_build, "redis_reachable", lambda url, **_: False)
    CliRunner().invoke(app, ["features", "apply", "--dataset", "nothing-here"])
    assert "REDIS_URL" not in os.environ


def test_a_given_redis_url_that_does_not_answer_is_an_error_not_sqlite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:s3cr3t@127.0.0.1:1/0")
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["features", "apply", "--dataset", "tiny"])
    assert result.exit_code == 2
    assert "does not answer" in result.output and "s3cr3t" not in result.output
