"""tower_shapes: the shapes, the means over rounds, the new / old ratios and the table, from
known rows (no server, no timing); and one short run against two real tritonservers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from cascade.bench import tower_shapes
from cascade.cpu_quota import CpuQuota


def _row(
    shape: str, c: int, rnd: int, *, rps: float, p50: float, p99: float, cpu_s: float
) -> dict[str, Any]:
    requests = int(rps * 2)
    return {
        "shape": shape,
        "concurrency": c,
        "round": rnd,
        "requests": requests,
        "errors": 0,
        "throughput": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "elapsed_s": 2.0,
        "server_cpu_s": cpu_s,
    }


ROWS: list[dict[str, Any]] = [
    # concurrency 1: old 2.0 / 4.0 ms, new 3.0 / 8.0 ms; CPU 1.0 -> 1.5 ms per request
    _row("old", 1, 1, rps=300, p50=1.8, p99=3.0, cpu_s=0.6),
    _row("old", 1, 2, rps=200, p50=2.2, p99=5.0, cpu_s=0.4),
    _row("new", 1, 1, rps=200, p50=3.0, p99=8.0, cpu_s=0.6),
    _row("new", 1, 2, rps=200, p50=3.0, p99=8.0, cpu_s=0.6),
    # concurrency 8: new 1.2x at p50, 1.6x at p99 (above the target)
    _row("old", 8, 1, rps=1_000, p50=10.0, p99=20.0, cpu_s=2.0),
    _row("new", 8, 1, rps=900, p50=12.0, p99=32.0, cpu_s=2.7),
]


def test_shapes_are_the_old_tower_and_todays_defaults() -> None:
    from two_tower.train import TrainParams

    old, new = tower_shapes.shape_params("old"), tower_shapes.shape_params("new")
    assert new == TrainParams()
    assert (old.members, old.dim, old.seq_layers, old.seen_pool) == (2, 128, 0, 0)
    assert old.user_id_embedding and not new.user_id_embedding
    assert tower_shapes.describe(old) == (
        "2 x 128, mean of the recent items, no seen-set reader, user-id embedding on"
    )
    assert "attention pooling of up to 500 seen items" in tower_shapes.describe(new)
    with pytest.raises(ValueError, match="unknown shape"):
        tower_shapes.shape_params("newer")


def test_summary_means_over_rounds_and_ratios_new_over_old() -> None:
    one, eight = tower_shapes.summarise(ROWS)
    assert one["concurrency"] == 1 and eight["concurrency"] == 8
    assert one["old"]["rounds"] == 2 and one["old"]["requests"] == 1_000
    assert one["old"]["throughput"] == pytest.approx(250)
    assert one["old"]["p50_ms"] == pytest.approx(2.0)
    assert one["old"]["p99_ms"] == pytest.approx(4.0)
    assert one["old"]["cpu_ms_per_req"] == pytest.approx(1.0)  # 0.6 s / 600, 0.4 s / 400
    assert one["new"]["cpu_ms_per_req"] == pytest.approx(1.5)
    assert one["p50_ratio"] == pytest.approx(1.5)
    assert one["p99_ratio"] == pytest.approx(2.0)
    assert one["cpu_ratio"] == pytest.approx(1.5)
    assert eight["p99_ratio"] == pytest.approx(1.6)


def test_cpu_and_ratio_without_a_reading_are_nan_not_errors() -> None:
    assert math.isnan(tower_shapes.cpu_ms_per_request({"requests": 0, "server_cpu_s": 1.0}))
    assert math.isnan(tower_shapes.cpu_ms_per_request({"requests": 5, "server_cpu_s": math.nan}))
    assert math.isnan(tower_shapes.ratio(1.0, 0.0))
    assert math.isnan(tower_shapes.ratio(math.nan, 1.0))


def test_table_has_the_readme_layout_and_marks_ratios_above_target() -> None:
    table = tower_shapes.format_table(tower_shapes.summarise(ROWS))
    lines = table.splitlines()
    assert lines[0].startswith("| conc. | old: req/s, p50 / p99 ms | new: req/s, p50 / p99 ms |")
    assert lines[1] == "|---:|---|---|---:|---:|---|"
    assert lines[2] == (
        "| 1 | 250, 2.00 / 4.00 | 200, 3.00 / 8.00 | 1.50x | **2.00x** | 1.00 → 1.50 (1.50x) |"
    )
    assert lines[3] == (
        "| 8 | 1,000, 10.0 / 20.0 | 900, 12.0 / 32.0 | 1.20x | **1.60x** | 1.00 → 1.50 (1.50x) |"
    )
    verdict = tower_shapes.verdict(tower_shapes.summarise(ROWS))
    assert verdict == (
        "Above 1.5x of the old tower: p99 at concurrency 1 (2.00x), p99 at concurrency 8 (1.60x)."
    )
    within = tower_shapes.verdict(tower_shapes.summarise(ROWS[:2] + ROWS[:2]))
    assert within.startswith("Within 1.5x")


def test_a_missing_shape_shows_dashes() -> None:
    table = tower_shapes.format_table(tower_shapes.summarise(ROWS[:2]))
    assert "| 1 | 250, 2.00 / 4.00 | -, - / - | - | - | 1.00 → - (-) |" in table


@pytest.mark.integration
def test_short_run_serves_both_shapes_and_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    code = tower_shapes.main(
        ["--duration", "0.3", "--rounds", "1", "--items", "300", "--concurrency", "1,4"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| conc. | old: req/s" in out and "load average" in out
    data = json.loads((tmp_path / "reports" / "bench" / "tower_shapes.json").read_text())
    assert {(r["shape"], r["concurrency"]) for r in data["rows"]} == {
        ("old", 1),
        ("new", 1),
        ("old", 4),
        ("new", 4),
    }
    for row in data["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0
        assert row["server_cpu_s"] > 0  # tritonserver and its stub did the work


@pytest.mark.integration
def test_triton_cpu_holds_both_servers_to_a_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--triton-cpu``: each tritonserver and its stubs in their own cgroup quota for the run,
    said in the report; the groups are gone afterwards."""
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    code = tower_shapes.main(
        [
            *("--duration", "0.3", "--rounds", "1", "--items", "300", "--concurrency", "2"),
            *("--triton-cpu", "0.5"),
        ]
    )
    captured = capsys.readouterr()
    if code == 2 and "--triton-cpu 0.5" in captured.err:
        pytest.skip(f"no cgroup CPU quota here: {captured.err.strip()}")
    assert code == 0, captured.out
    assert "held to 0.5 CPU (cgroup quota)" in captured.out
    data = json.loads((tmp_path / "reports" / "bench" / "tower_shapes.json").read_text())
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in data["rows"])
    for name in tower_shapes.SHAPE_NAMES:
        assert not CpuQuota(f"cascade-bench-shape-{name}", cpus=0.5).path.exists()
