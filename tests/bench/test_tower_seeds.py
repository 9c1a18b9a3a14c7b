"""tower_seeds: the summary and the table from known per-seed figures, and one child's cost."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from cascade.bench import tower_seeds


def _run(seed: int, tower_r20: float, als_r20: float) -> dict[str, Any]:
    def metrics(r20: float) -> dict[str, float]:
        return {m: r20 for m in tower_seeds.METRICS}

    return {
        "seed": seed,
        "models": {
            "popular": metrics(0.1),
            "als": metrics(als_r20),
            "ease": metrics(0.3),
            "two_tower": metrics(tower_r20),
        },
        "users_evaluated": 19_624,
        "commands": {
            "als": {"wall_s": 7.0, "peak_rss_mb": 300.0},
            "two_tower": {"wall_s": 600.0, "peak_rss_mb": 2048.0},
            "evaluate": {"wall_s": 40.0, "peak_rss_mb": 700.0},
        },
        "two_tower": {
            "train_seconds": 550.0,
            "peak_rss_mb": 2048.0,
            "best_epoch": [5],
            "epochs_run": [7],
            "val_recall@20": [0.25],
        },
    }


RUNS = [_run(42, 0.22, 0.25), _run(43, 0.24, 0.26), _run(44, 0.26, 0.27)]


def test_summary_is_mean_sample_std_min_max() -> None:
    summary = tower_seeds.summarise(RUNS)
    mean, std, low, high = summary["two_tower"]["recall@20"]
    assert mean == pytest.approx(0.24)
    assert std == pytest.approx(0.02)  # sample standard deviation (n - 1)
    assert (low, high) == (0.22, 0.26)
    assert summary["popular"]["recall@20"] == pytest.approx((0.1, 0.0, 0.1, 0.1))


def test_ratios_are_taken_within_each_seed() -> None:
    assert tower_seeds.seed_ratios(RUNS) == pytest.approx([0.88, 0.24 / 0.26, 0.26 / 0.27])
    missing = [{**RUNS[0], "models": {"als": RUNS[0]["models"]["als"]}}]
    assert tower_seeds.seed_ratios(missing) == []


def test_table_shows_spreads_ratio_and_costs() -> None:
    table = tower_seeds.format_table(RUNS, tower_seeds.summarise(RUNS))
    assert "0.2400 ± 0.0200 [0.2200, 0.2600]" in table
    assert "| 0.923x |" in table  # Two-Tower / ALS of the means: 0.24 / 0.26
    assert "within each seed: 0.880, 0.923, 0.963" in table
    assert "| 600 / 2048 | 7 / 300 | 40 / 700 |" in table


def test_cascade_reports_wall_time_and_peak_rss_of_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for the `cascade` script beside the interpreter: python itself, given `-c`.
    monkeypatch.setattr(tower_seeds, "_executable", lambda: sys.executable)
    code = "b = bytearray(200 * 2**20); print('done')"
    cost = tower_seeds._cascade(["-c", code], log=tmp_path / "x.log")
    assert cost["peak_rss_mb"] > 200
    assert cost["wall_s"] >= 0
    assert "done" in (tmp_path / "x.log").read_text()
    with pytest.raises(RuntimeError, match="failed"):
        tower_seeds._cascade(["-c", "raise SystemExit(3)"], log=tmp_path / "y.log")


def test_merge_joins_parallel_runs_by_seed_and_refuses_mixed_ones(tmp_path: Path) -> None:
    meta = {"data": "demo", "profile": "sessions", "tower_args": []}
    paths = []
    for run in (RUNS[2], RUNS[0], RUNS[1]):
        path = tmp_path / f"{run['seed']}.json"
        tower_seeds.write_results(tmp_path / str(run["seed"]), "seeds", runs=[run], meta=meta)
        path.write_text((tmp_path / str(run["seed"]) / "seeds.json").read_text())
        paths.append(path)
    runs, joint = tower_seeds.merge(paths)
    assert [r["seed"] for r in runs] == [42, 43, 44]
    assert joint["profile"] == "sessions" and len(joint["merged_from"]) == 3
    table = tower_seeds.write_results(tmp_path / "all", "seeds-sessions", runs=runs, meta=joint)
    assert "0.2400 ± 0.0200 [0.2200, 0.2600]" in table
    assert (tmp_path / "all" / "seeds-sessions.json").is_file()
    with pytest.raises(ValueError, match="a seed appears twice"):
        tower_seeds.merge([paths[0], paths[0]])
    other = tmp_path / "other.json"
    tower_seeds.write_results(
        tmp_path / "o", "seeds", runs=[RUNS[0]], meta={**meta, "profile": "uniform"}
    )
    other.write_text((tmp_path / "o" / "seeds.json").read_text())
    with pytest.raises(ValueError, match="differs"):
        tower_seeds.merge([paths[0], other])


def test_collect_reads_the_artifact_the_report_evaluated(tmp_path: Path) -> None:
    # `latest` is a pointer file naming the version, not a link: the first version of this bench
    # read `latest/metadata.json` and failed after a whole training run.
    from cascade.runtime.paths import Layout

    layout = Layout(home=tmp_path)
    report = {
        "models": RUNS[0]["models"],
        "users_evaluated": 19_416,
        "params": {"two_tower": {"artifact": "20261204T150731Z"}},
    }
    (layout.reports_dir / "demo").mkdir(parents=True)
    (layout.reports_dir / "demo" / "report.json").write_text(json.dumps(report))
    for version, epochs in (("20261204T150731Z", 4), ("20261204T160000Z", 2)):
        folder = layout.artifacts_dir / "two_tower" / version
        folder.mkdir(parents=True)
        history = [[{"epoch": float(e), "val_recall@20": 0.2 + e / 100} for e in range(epochs)]]
        meta = {"train_seconds": 3466.1, "peak_rss_mb": 1419.0, "best_epoch": [epochs]}
        (folder / "metadata.json").write_text(json.dumps({**meta, "history": history}))
    (layout.artifacts_dir / "two_tower" / "latest").write_text("20261204T160000Z")
    run = tower_seeds.collect_seed(seed=42, data="demo", layout=layout, costs={})
    assert run["two_tower"]["epochs_run"] == [4]  # the evaluated one, not what `latest` names now
    assert run["two_tower"]["val_recall@20"] == [pytest.approx(0.23)]
    report["params"] = {}
    (layout.reports_dir / "demo" / "report.json").write_text(json.dumps(report))
    run = tower_seeds.collect_seed(seed=42, data="demo", layout=layout, costs={})
    assert run["two_tower"]["epochs_run"] == [2]  # no name in the report: through `latest`
