"""bench-triton: delegation to a module, its output and exit code in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascade.bench import triton


def test_delegate_output_lands_in_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    monkeypatch.setattr(triton, "DELEGATE", "platform")  # any module runnable with -m
    assert triton.main(["--name", "t"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Two-Tower and Triton benchmark") and "load average" in out
    data = json.loads((tmp_path / "reports" / "bench" / "t.json").read_text())
    assert data["returncode"] == 0 and data["stdout"].strip()
    assert (tmp_path / "reports" / "bench" / "t.md").read_text().startswith("## Two-Tower")


def test_missing_delegate_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    monkeypatch.setattr(triton, "DELEGATE", "no_such_module_for_bench")
    assert triton.main([]) == 2
    assert "is not installed" in capsys.readouterr().out
