"""bench-offline: the report from known figures, argument errors, and real steps on tiny data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cascade.bench import offline

GEN: dict[str, Any] = {
    "users": 1_000_000,
    "items": 100_000,
    "interactions": 20_000_000,
    "generate_s": 40.0,
    "features_s": 90.0,
    "write_s": 10.0,
    "wall_s": 140.0,
    "cpu_s": 150.0,
    "peak_rss_mb": 9000.0,
}
ALS: dict[str, Any] = {
    "iterations": 15,
    "factors": 64,
    "seconds": 200.0,
    "seconds_per_iteration": 13.3,
    "peak_rss_mb": 3000.0,
    "threads": 2,
    "users": 1_000_000,
    "items": 100_000,
}
MAT: dict[str, Any] = {
    "rows": 2_000_000,
    "redis_keys": 1_000_000,
    "seconds": 300.0,
    "process_peak_rss_mb": 2000.0,
    "redis_used_memory_delta_bytes": 300 * 2**20,
    "redis_sampled_bytes": 280 * 2**20,
    "bytes_per_key": 293.6,
    "per_view": {"user_profile": {"engine": "direct"}},
}
ROWS: dict[str, Any] = {
    "seconds": 320.0,
    "process_peak_rss_mb": 5000.0,
    "rows": 16_000_000,
    "empty_history_share": 0.05,
}
EVAL: dict[str, Any] = {
    "seconds": 10.0,
    "peak_rss_mb": 500.0,
    "users_evaluated": 20_000,
    "recall@20": {"popular": 0.05, "als": 0.12},
    "als_over_popular": 2.4,
}


def test_render_judges_the_large_targets() -> None:
    results: dict[str, dict[str, dict[str, Any]]] = {
        "demo": {"evaluation": EVAL, "materialize": {"error": "exit 1: no Redis"}},
        "large": {"generate": GEN, "materialize": MAT, "als_train": ALS, "two_tower_rows": ROWS},
    }
    text = offline.render(results, footer="_footer_")
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| ")}
    assert rows["data generation + feature tables"].endswith("| < 300 s, < 8 GB | NO |")  # 9 GB
    assert rows["ALS training (15 it, 64 factors)"].endswith("| < 240 s | yes |")
    assert "300.0 MiB (used_memory delta)" in text and "| reported |" in text
    assert rows["evaluation (popularity + ALS)"].endswith("| >= 1.5x | yes |")
    assert rows["Two-Tower training set"].endswith("| < 300 s, < 8 GB | NO |")  # 320 s
    assert "5.0% with an empty user history" in text
    assert "exit 1: no Redis" in text
    assert text.rstrip().endswith("_footer_")


def test_bad_scales_exit_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        offline.main(["--scales", "huge"])
    assert exc.value.code == 2
    assert "tiny, demo, large" in capsys.readouterr().err


@pytest.mark.integration
def test_steps_on_tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real child processes: generation, the tiny data set, ALS training and evaluation."""
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    gen = offline.step("tiny", "generate", timeout_s=120)
    assert gen["interactions"] > 0 and gen["peak_rss_mb"] > 0
    assert "dataset_dir" in offline.step("tiny", "prepare", timeout_s=120)
    als = offline.step("tiny", "als_train", timeout_s=120)
    assert als["iterations"] == 15 and als["factors"] == 64 and als["seconds"] > 0
    ev = offline.step("tiny", "evaluation", timeout_s=120)
    assert set(ev["recall@20"]) == {"popular", "als"}
    monkeypatch.delenv("REDIS_URL", raising=False)  # the join reads parquet; apply needs no Redis
    rows = offline.step("tiny", "two_tower_rows", timeout_s=300)
    assert rows["rows"] > 0 and 0 < rows["empty_history_share"] < 0.5, rows
    tiny: dict[str, dict[str, dict[str, Any]]] = {
        "tiny": {"generate": gen, "als_train": als, "evaluation": ev, "two_tower_rows": rows}
    }
    assert "tiny" in offline.render(tiny, footer="")


@pytest.mark.integration
def test_a_failing_step_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))  # no data set here
    result = offline.step("tiny", "als_train", timeout_s=120)
    assert result["error"].startswith("exit 1")
