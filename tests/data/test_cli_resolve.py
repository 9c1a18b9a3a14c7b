"""``cascade data`` and resolve_dataset: folders, reuse, names, and clean errors."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import typer
from typer.testing import CliRunner

from cascade.data.cli import data
from cascade.data.errors import DataSourceError
from cascade.data.profiles import Profile
from cascade.data.resolve import dataset_name, resolve_dataset
from cascade.runtime.paths import Layout
from cascade.runtime.schema import FEATURES_DIR, MANIFEST_FILE, USER_ACTIVITY_FILE


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(data)
    return app


def test_cli_builds_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    result = CliRunner().invoke(_app(), ["--source", "synthetic:tiny", "--snapshot-days", "14"])
    assert result.exit_code == 0, result.output
    assert "300 users" in result.output and "200 items" in result.output
    folder = tmp_path / "datasets" / "tiny"
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["seed"] == 42 and manifest["source"] == "synthetic:tiny"
    assert manifest["snapshot_days"] == 14
    assert (folder / FEATURES_DIR / USER_ACTIVITY_FILE).is_file()


def test_cli_bad_file_exits_2_with_message_and_no_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path / "home"))
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\n1,2,3\nx,2,3\n")
    result = CliRunner().invoke(_app(), ["-s", f"csv:{bad}"])
    assert result.exit_code == 2
    assert f"{bad}, line 3: non-numeric user_id 'x'" in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_cli_unknown_spec_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    result = CliRunner().invoke(_app(), ["-s", "synthetic:huge"])
    assert result.exit_code == 2 and "unknown synthetic scale" in result.output


def test_resolve_reuses_and_rebuilds(tmp_path):
    layout = Layout(home=tmp_path)
    first = resolve_dataset("synthetic:tiny", layout=layout)
    stamp = json.loads((first / MANIFEST_FILE).read_text())["created_at"]
    mtime = (first / MANIFEST_FILE).stat().st_mtime_ns
    assert resolve_dataset("synthetic:tiny", layout=layout) == first
    assert (first / MANIFEST_FILE).stat().st_mtime_ns == mtime  # reused, not rebuilt
    resolve_dataset("synthetic:tiny", layout=layout, seed=5)  # another seed: rebuilt
    assert json.loads((first / MANIFEST_FILE).read_text())["seed"] == 5
    assert stamp
    resolve_dataset("synthetic:tiny", layout=layout, seed=5, snapshot_every=timedelta(days=3))
    assert json.loads((first / MANIFEST_FILE).read_text())["snapshot_days"] == 3
    assert resolve_dataset("tiny", layout=layout) == first  # a plain name


def test_resolve_unknown_name(tmp_path):
    with pytest.raises(DataSourceError, match="no data set named 'nope'"):
        resolve_dataset("nope", layout=Layout(home=tmp_path))


def test_resolve_csv_names_folder_by_stem_and_hash(tmp_path):
    src = tmp_path / "clicks.csv"
    src.write_text("user_id,item_id,timestamp,rating\n1,2,100,5\n1,3,200,2\n2,2,300,4\n")
    name = dataset_name(f"csv:{src}")
    assert name.startswith("clicks-") and len(name) == len("clicks-") + 8
    assert dataset_name(f"csv:{src}", positive_threshold=4) == name + "-pos4"
    folder = resolve_dataset(f"csv:{src}", layout=Layout(home=tmp_path / "h"), positive_threshold=4)
    assert folder.name == name + "-pos4"
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["rows"]["interactions"] == 2 and manifest["positive_threshold"] == 4
    assert (folder / FEATURES_DIR / USER_ACTIVITY_FILE).is_file()


def test_cli_profile_is_part_of_the_identity(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    manifest_path = tmp_path / "datasets" / "tiny" / MANIFEST_FILE
    first = CliRunner().invoke(_app(), ["-s", "synthetic:tiny"])
    assert first.exit_code == 0, first.output
    assert "data set tiny (sessions):" in first.output
    sessions = json.loads(manifest_path.read_text())
    assert sessions["profile"] == "sessions"
    switched = CliRunner().invoke(_app(), ["-s", "synthetic:tiny", "--profile", "uniform"])
    assert switched.exit_code == 0, switched.output
    assert "data set tiny (uniform):" in switched.output
    uniform = json.loads(manifest_path.read_text())
    assert uniform["profile"] == "uniform"  # the same folder, rebuilt
    assert uniform["interactions_sha256"] != sessions["interactions_sha256"]
    mtime = manifest_path.stat().st_mtime_ns
    again = CliRunner().invoke(_app(), ["-s", "synthetic:tiny", "--profile", "uniform"])
    assert again.exit_code == 0 and manifest_path.stat().st_mtime_ns == mtime  # reused
    back = CliRunner().invoke(_app(), ["-s", "synthetic:tiny"])  # the default again: rebuilt
    assert back.exit_code == 0
    assert (
        json.loads(manifest_path.read_text())["interactions_sha256"]
        == (sessions["interactions_sha256"])
    )


def test_resolve_rebuilds_a_folder_from_before_profiles(tmp_path):
    layout = Layout(home=tmp_path)
    folder = resolve_dataset("synthetic:tiny", layout=layout, profile=Profile.UNIFORM)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    del manifest["profile"]  # what a folder written before profiles holds
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    resolve_dataset("synthetic:tiny", layout=layout, profile=Profile.UNIFORM)
    assert json.loads((folder / MANIFEST_FILE).read_text())["profile"] == "uniform"


def test_cli_bad_profile_exits_2_naming_the_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    result = CliRunner().invoke(_app(), ["-s", "synthetic:tiny", "--profile", "bursty"])
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())  # typer may box and wrap it
    assert "Invalid value for '--profile'" in text and "'sessions', 'uniform'" in text
    assert not (tmp_path / "datasets").exists()


def test_cli_profile_with_a_file_source_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path / "home"))
    src = tmp_path / "clicks.csv"
    src.write_text("user_id,item_id,timestamp\n1,2,100\n")
    result = CliRunner().invoke(_app(), ["-s", f"csv:{src}", "--profile", "uniform"])
    assert result.exit_code == 2
    assert "a profile applies to synthetic:SCALE data only" in result.output
    assert "Traceback" not in result.output
