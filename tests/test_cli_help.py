"""The CLI's help as a user reads it: plain, option names whole, placeholders named after the
option (issue 19: rich tables cut names and printed ``<bool>``/``<str>``)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [["train", "mf"], ["evaluate"], ["features", "materialize"]])
def test_help_is_plain_and_names_its_placeholders(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cascade.cli", *argv, "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "60", "PATH": ""},
        check=True,
    ).stdout
    assert "<bool>" not in out and "<str>" not in out and "<int" not in out, out
    assert "╭" not in out and "│" not in out, "rich boxes"
    assert "--help" in out
