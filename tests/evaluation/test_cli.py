"""`cascade train mf`, `cascade evaluate`, `cascade recommend` through the real CLI on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cascade.cli import app
from cascade.data.resolve import resolve_dataset
from cascade.runtime.paths import Layout
from fallback_mf.artifacts import latest_dir, list_versions, read_metadata


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("home")
    resolve_dataset("synthetic:tiny", layout=Layout(home=root))
    return root


def run(home: Path, *args: str):
    return CliRunner().invoke(app, list(args), env={"CASCADE_HOME": str(home)})


@pytest.fixture(scope="module")
def trained(home):
    """A train-split artifact, then a full-data one (which becomes `latest`)."""
    split = run(
        home,
        "train",
        "mf",
        "--data",
        "tiny",
        "--factors",
        "8",
        "--iterations",
        "5",
        "--no-progress",
    )
    assert split.exit_code == 0, split.output
    full = run(
        home,
        "train",
        "mf",
        "--data",
        "tiny",
        "--factors",
        "8",
        "--iterations",
        "5",
        "--no-progress",
        "--full-data",
    )
    assert full.exit_code == 0, full.output
    return split, full


def test_train_mf_records_data_split_and_metrics(home, trained):
    versions = list_versions(home / "artifacts")
    assert len(versions) == 2
    latest = read_metadata(latest_dir(home / "artifacts"))
    assert latest["data"]["split"] is None  # --full-data is what `latest` serves
    split_meta = next(read_metadata(v) for v in versions if read_metadata(v)["data"]["split"])
    manifest = json.loads((home / "datasets" / "tiny" / "manifest.json").read_text())
    assert split_meta["data"]["checksum"] == manifest["interactions_sha256"]
    assert split_meta["data"]["split"] == {
        "kind": "temporal_per_user",
        "test_fraction": 0.2,
        "min_interactions": 5,
    }
    assert split_meta["metrics"]["als"]["recall@20"] > 0
    assert "test split Recall@20" in trained[0].output


def test_evaluate_uses_the_split_artifact_and_writes_report(home, trained):
    result = run(
        home, "evaluate", "--dataset", "tiny", "--models", "popular,als", "--no-train-missing"
    )
    assert result.exit_code == 0, result.output
    assert "| Recall@20 |" in result.output and "als Recall@20 =" in result.output
    out = home / "reports" / "tiny"
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"popular", "als"}
    assert len(report["models"]["als"]["recall_curve"]) == 50
    assert (out / "recall_at_k.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "report.md").read_text().startswith("Evaluation on `tiny`")


def test_evaluate_refuses_artifact_of_another_split(home, trained):
    result = run(
        home,
        "evaluate",
        "--dataset",
        "tiny",
        "--models",
        "als",
        "--test-fraction",
        "0.3",
        "--no-train-missing",
    )
    # no artifact for this split and no in-memory training: nothing left to evaluate
    assert result.exit_code == 2, result.output
    assert "nothing to evaluate: als: no ALS artifact trained on tiny (train split" in result.output


def test_evaluate_two_tower_without_artifact_is_skipped(home, trained):
    result = run(home, "evaluate", "--dataset", "tiny", "--models", "popular,two_tower")
    assert result.exit_code == 0, result.output
    assert "Skipped two_tower" in result.output


def test_recommend_writes_original_ids(home, trained, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("0\n5\n\n123456789\n")
    out = tmp_path / "recs.csv"
    result = run(
        home,
        "recommend",
        "--model",
        "als",
        "--users",
        str(users),
        "--k",
        "7",
        "--out",
        str(out),
        "--dataset",
        "tiny",
    )
    assert result.exit_code == 0, result.output
    recs = pd.read_csv(out)
    assert list(recs.columns) == ["user_id", "item_id", "rank"]
    assert recs.groupby("user_id")["rank"].apply(list).tolist() == [list(range(1, 8))] * 3
    interactions = pd.read_parquet(home / "datasets" / "tiny" / "interactions.parquet")
    assert recs["item_id"].isin(interactions["item_id"]).all()
    raw = out.read_bytes()
    assert b"\r" not in raw and raw.startswith(b"user_id,item_id,rank\n")  # \n line endings


def test_recommend_popular_from_csv_with_header(home, tmp_path):
    users = tmp_path / "users.csv"
    users.write_text("name,user_id\na,3\nb,4\n")
    out = tmp_path / "recs.csv"
    result = run(
        home,
        "recommend",
        "--model",
        "popular",
        "--users",
        str(users),
        "--out",
        str(out),
        "--dataset",
        "tiny",
        "--full-data",
    )
    assert result.exit_code == 0, result.output
    assert sorted(pd.read_csv(out)["user_id"].unique()) == [3, 4]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("1\nabc\n", "line 2: user id 'abc' is not an integer"),
        ("name,age\nx,3\n", "header has no user_id column"),
        (b"\xff\xfe\x00", "not a text file"),
    ],
)
def test_recommend_bad_users_file_exits_2(home, tmp_path, content, message):
    users = tmp_path / "users.txt"
    users.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = run(
        home,
        "recommend",
        "--model",
        "popular",
        "--users",
        str(users),
        "--out",
        str(tmp_path / "o.csv"),
        "--dataset",
        "tiny",
    )
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_recommend_missing_users_file_and_unknown_model(home, tmp_path):
    result = run(
        home,
        "recommend",
        "--model",
        "popular",
        "--users",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "o.csv"),
        "--dataset",
        "tiny",
    )
    assert result.exit_code == 2 and "cannot read" in result.output
    result = run(
        home,
        "recommend",
        "--model",
        "bpr",
        "--users",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "o.csv"),
    )
    assert result.exit_code == 2 and "choose from" in result.output


def test_recommend_without_matching_artifact_exits_2(tmp_path):
    home = tmp_path / "home"
    resolve_dataset("synthetic:tiny", layout=Layout(home=home))
    users = tmp_path / "u.txt"
    users.write_text("1\n")
    result = run(
        home,
        "recommend",
        "--model",
        "als",
        "--users",
        str(users),
        "--out",
        str(tmp_path / "o.csv"),
        "--dataset",
        "tiny",
    )
    assert result.exit_code == 2
    assert (
        "no ALS artifact trained on tiny" in result.output
        and "cascade train mf --data tiny" in result.output
    )


@pytest.mark.parametrize(
    "args",
    [
        ["train", "mf", "--data", "nosuchset"],
        ["train", "mf", "--data", "csv:/nonexistent/file.csv"],
        ["train", "mf", "--data", "tiny", "--confidence", "votes"],
        ["train", "mf", "--data", "tiny", "--factors", "0"],
        ["evaluate", "--dataset", "nosuchset"],
        ["evaluate", "--dataset", "tiny", "--models", "popular,bpr"],
        ["evaluate", "--dataset", "tiny", "--test-fraction", "1.5"],
    ],
)
def test_bad_arguments_exit_2(home, args):
    result = run(home, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_evaluate_trains_als_in_memory_when_no_artifact_matches(home, trained):
    before = list_versions(home / "artifacts")
    result = run(
        home, "evaluate", "--dataset", "tiny", "--models", "popular,als", "--test-fraction", "0.3"
    )
    assert result.exit_code == 0, result.output
    assert "als Recall@20 =" in result.output
    assert list_versions(home / "artifacts") == before  # in-memory model is not saved


def test_the_data_set_defaults_to_cascade_dataset(tmp_path):
    result = CliRunner().invoke(
        app,
        ["evaluate", "--models", "popular"],
        env={"CASCADE_HOME": str(tmp_path), "CASCADE_DATASET": "nosuchset"},
    )
    assert result.exit_code == 2 and "nosuchset" in result.output


def _als_versions(home: Path) -> tuple[str, str]:
    """(train-split version, full-data version) of the `trained` fixture."""
    versions = list_versions(home / "artifacts")
    split = next(v.name for v in versions if read_metadata(v)["data"]["split"])
    full = next(v.name for v in versions if read_metadata(v)["data"]["split"] is None)
    return split, full


def test_recommend_and_evaluate_use_the_version_asked_for(home, trained, tmp_path):
    split_version, _ = _als_versions(home)
    users = tmp_path / "users.txt"
    users.write_text("0\n5\n")
    out = tmp_path / "recs.csv"
    args = ["recommend", "--model", "als", "--users", str(users), "--out", str(out)]
    result = run(home, *args, "--dataset", "tiny", "--version", split_version)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 40
    result = run(
        home, "evaluate", "--dataset", "tiny", "--models", "popular,als",
        "--version", f"als={split_version}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "als Recall@20 =" in result.output


def test_a_version_trained_on_other_data_or_missing_is_refused_by_name(home, trained, tmp_path):
    _, full_version = _als_versions(home)
    users = tmp_path / "users.txt"
    users.write_text("0\n")
    args = ["recommend", "--model", "als", "--users", str(users), "--out", str(tmp_path / "o")]
    # the full-data model asked for against the train split (the default): refused, never swapped
    result = run(home, *args, "--dataset", "tiny", "--version", full_version)
    assert result.exit_code == 2
    assert f"ALS version {full_version} cannot be used: it was trained on tiny (full data" in (
        result.output
    )
    assert "not on tiny (train split" in result.output
    result = run(home, *args, "--dataset", "tiny", "--version", "20990101T000000Z")
    assert result.exit_code == 2
    assert "no ALS version '20990101T000000Z'" in result.output and full_version in result.output
    # evaluate: a pinned version that does not fit is an error, not a skipped model
    result = run(
        home, "evaluate", "--dataset", "tiny", "--models", "popular,als",
        "--version", f"als={full_version}",
    )  # fmt: skip
    assert result.exit_code == 2 and "cannot be used" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "popular,als", "--version", "als"], "expected MODEL=VERSION"),
        (["--models", "popular", "--version", "popular=1"], "only als, two_tower have versions"),
        (["--models", "popular", "--version", "als=1"], "--version names als, not among --models"),
    ],
)
def test_evaluate_version_bad_values_exit_2(home, args, message):
    result = run(home, "evaluate", "--dataset", "tiny", *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_recommend_version_of_a_model_without_artifacts_exits_2(home, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("0\n")
    result = run(
        home, "recommend", "--model", "popular", "--users", str(users),
        "--out", str(tmp_path / "o"), "--dataset", "tiny", "--version", "x",
    )  # fmt: skip
    assert result.exit_code == 2 and "popular has no artifact versions" in result.output
