"""``cascade rollout``: the offline gate, start/status/promote/abort on real Redis, and the
messages and exit codes for refusals and an unreachable Redis (never a traceback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cascade.cli import app
from cascade.rollout_gate import GateError, offline_gate
from tests.rollout.conftest import REDIS_URL

DATA = {"dataset": "small", "checksum": "abc123", "split": {"kind": "time", "test": 0.2}}


def version(repo: Path, v: int, recall: float | None, data: dict[str, Any] | None = DATA) -> None:
    folder = repo / "two_tower" / str(v)
    folder.mkdir(parents=True)
    meta: dict[str, Any] = {"artifact_version": f"art{v}"}
    if recall is not None:
        meta["metrics"] = {"two_tower": {"recall@20": recall}, "popularity": {"recall@20": 0.05}}
    if data is not None:
        meta["data"] = data
    (folder / "metadata.json").write_text(json.dumps(meta))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    version(tmp_path, 1, 0.200)
    version(tmp_path, 2, 0.199)  # -0.5%: within 2%
    version(tmp_path, 3, 0.150)  # -25%
    version(tmp_path, 4, None)  # no metrics
    version(tmp_path, 5, 0.3, {**DATA, "checksum": "other"})
    return tmp_path


def test_gate_figures(repo: Path) -> None:
    ok = offline_gate(repository=repo, stable=1, candidate=2, max_drop=0.02)
    assert ok.passed and ok.relative_drop == pytest.approx(0.005)
    bad = offline_gate(repository=repo, stable=1, candidate=3, max_drop=0.02)
    assert not bad.passed and "fails" in bad.message and "-25.0%" in bad.message
    with pytest.raises(GateError, match="no offline recall@20"):
        offline_gate(repository=repo, stable=1, candidate=4, max_drop=0.02)
    with pytest.raises(GateError, match="different data"):
        offline_gate(repository=repo, stable=1, candidate=5, max_drop=0.02)
    with pytest.raises(GateError, match="not in the model repository"):
        offline_gate(repository=repo, stable=1, candidate=9, max_drop=0.02)


def test_a_stable_version_without_figures_is_told_so_not_blamed_for_its_split(tmp_path) -> None:
    """`cascade up` exports a version trained on the full data: no holdout figures, no split."""
    version(tmp_path, 1, None, {**DATA, "split": None})
    version(tmp_path, 2, 0.2)
    with pytest.raises(GateError, match="version 1 records no offline recall@20"):
        offline_gate(repository=tmp_path, stable=1, candidate=2, max_drop=0.02)


def test_gate_reads_data_from_the_artifact(tmp_path: Path) -> None:
    version(tmp_path / "repo", 1, 0.2, data=None)
    version(tmp_path / "repo", 2, 0.2, data=None)
    for v in (1, 2):
        art = tmp_path / "artifacts" / "two_tower" / f"art{v}"
        art.mkdir(parents=True)
        (art / "metadata.json").write_text(json.dumps({"data": DATA}))
    result = offline_gate(repository=tmp_path / "repo", stable=1, candidate=2, max_drop=0.02,
                          artifacts_dir=tmp_path / "artifacts")  # fmt: skip
    assert result.passed
    with pytest.raises(GateError, match="not recorded"):
        offline_gate(repository=tmp_path / "repo", stable=1, candidate=2, max_drop=0.02)


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["rollout", *args], catch_exceptions=False)


def test_start_status_abort_promote(repo: Path, prefix: str) -> None:
    common = ["--redis-url", REDIS_URL, "--prefix", prefix]
    start = ["start", "--model-repository", str(repo), *common]
    r = cli(*start, "--candidate", "3", "--stable", "1")
    assert r.exit_code == 2 and "offline gate fails" in r.output and "--force" in r.output
    r = cli(*start, "--candidate", "4", "--stable", "1")
    assert r.exit_code == 2 and "cannot judge" in r.output
    r = cli(*start, "--candidate", "2", "--stable", "1", "--id", "r-a", "--shadow", "30s",
            "--steps", "1,10", "--step-duration", "1m")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "offline gate passes" in r.output and "now shadow" in r.output
    r = cli(*start, "--candidate", "2", "--stable", "1")
    assert r.exit_code == 2 and "abort or promote it first" in r.output
    r = cli("status", *common, "--json")
    status = json.loads(r.output)
    assert status["state"]["phase"] == "shadow" and status["state"]["plan"]["steps"] == [1, 10]
    assert "phase: shadow" in cli("status", *common).output
    r = cli("abort", *common, "--reason", "looks off")
    assert r.exit_code == 0 and "version 1 serves everyone" in r.output
    assert cli("abort", *common).exit_code == 2  # nothing to abort
    # forced past the gate, then promoted by hand; the next rollout starts from version 3
    r = cli(*start, "--candidate", "3", "--force", "--id", "r-b")
    assert r.exit_code == 0 and "started anyway (--force)" in r.output
    r = cli("promote", *common)
    assert r.exit_code == 0 and "version 3 is stable" in r.output
    history = json.loads(cli("status", *common, "--json").output)["history"]
    assert [h["to"] for h in history] == ["shadow", "rolled_back", "shadow", "promoted"]
    r = cli(*start, "--candidate", "2", "--force", "--id", "r-c", "--shadow", "0")
    assert r.exit_code == 0 and "v3 -> v2, now canary(1%)" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--candidate", "7"], "not in"),
        (["--candidate", "2", "--steps", "5,1"], "must increase"),
        (["--candidate", "2", "--steps", "a,b"], "percentages"),
        (["--candidate", "2", "--shadow", "soon"], "not a duration"),
        # the plan's checks come before the gate, which would refuse v3 (-25%)
        (["--candidate", "3", "--steps", "5,1"], "must increase"),
    ],
)
def test_bad_input_is_a_message(repo: Path, prefix: str, args: list[str], message: str) -> None:
    r = cli("start", "--model-repository", str(repo), "--redis-url", REDIS_URL,
            "--prefix", prefix, "--stable", "1", *args)  # fmt: skip
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_unreachable_redis(dead_url: str, repo: Path) -> None:
    for args in (
        ["status"],
        ["abort"],
        ["start", "--candidate", "2", "--model-repository", str(repo)],
    ):
        r = cli(*args, "--redis-url", dead_url)
        assert r.exit_code == 1 and "Redis unavailable" in r.output
        assert "secretpw" not in r.output and "Traceback" not in r.output


def test_init_names_the_stable_version(repo: Path, prefix: str) -> None:
    common = ["--redis-url", REDIS_URL, "--prefix", prefix]
    r = cli("init", "--stable", "9", "--model-repository", str(repo), *common)
    assert r.exit_code == 2 and "not in" in r.output
    r = cli("init", "--stable", "1", "--model-repository", str(repo), *common)
    assert r.exit_code == 0 and "stable version: 1" in r.output
    # start now takes stable from the state, no --stable needed
    r = cli("start", "--candidate", "2", "--model-repository", str(repo), "--id", "r-i", *common)
    assert r.exit_code == 0 and "v1 -> v2" in r.output
    r = cli("init", "--stable", "2", "--model-repository", str(repo), *common)
    assert r.exit_code == 2 and "abort or promote it first" in r.output


def test_history_lines_name_the_step_only_inside_a_canary() -> None:
    from gateway.rollout.state import describe_move

    base = {"rollout_id": "v2-1", "by": "cli", "reason": "why", "step": -1}
    assert describe_move({**base, "from": "stable", "to": "stable"}) == (
        "v2-1: stable (initialised) by cli: why"
    )
    assert describe_move({**base, "from": "shadow", "to": "canary", "step": 0}) == (
        "v2-1: shadow -> canary (step 0) by cli: why"
    )
    assert describe_move({**base, "from": "canary", "to": "rolled_back"}) == (
        "v2-1: canary -> rolled_back by cli: why"
    )
