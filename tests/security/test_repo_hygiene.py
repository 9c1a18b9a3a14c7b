"""Issue 20, item 14: a local ``.env`` (docker compose reads it: Redis and Grafana passwords,
the metrics token) can never be committed by accident."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="no git")
@pytest.mark.parametrize("name", [".env", ".env.local", "docker/.env"])
def test_env_files_are_git_ignored(name: str) -> None:
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", name], cwd=ROOT, check=False, timeout=30
    )
    assert proc.returncode == 0, f"{name} is not git-ignored"


def test_the_example_env_file_stays_tracked() -> None:
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", "docker/env.example"],
        cwd=ROOT,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 1
