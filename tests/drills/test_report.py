"""The report code on synthetic Locust CSVs and drill results (no processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascade.drills.analysis import Check, DrillResult
from cascade.drills.load import Sample
from cascade.drills.report import (
    drill_markdown,
    drill_table,
    fallback_share_series,
    loadtest_report,
    tier_of,
    write_drill_report,
)

PCT = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
STATS_HEAD = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    + ",".join(PCT)
)
HIST_HEAD = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,"
    + ",".join(PCT)
    + ",Total Request Count,Total Failure Count,Total Median Response Time,"
    "Total Average Response Time,Total Min Response Time,Total Max Response Time,Total Average Content Size"
)


def _stats_row(method: str, name: str, count: int, failures: int, p: int, rps: float) -> str:
    pct = ",".join(str(p * (1 + i // 4)) for i in range(len(PCT)))
    return f"{method},{name},{count},{failures},{p},{p},1,{p * 4},900,{rps},0,{pct}"


def _hist_row(ts: int, users: int, method: str, name: str, total: int, rps: float = 0.0) -> str:
    pct = ",".join(["10"] * len(PCT))
    return f"{ts},{users},{method},{name},{rps},0,{pct},{total},0,10,10,1,40,900"


@pytest.fixture
def csvs(tmp_path: Path) -> Path:
    prefix = tmp_path / "locust"
    stats = [
        STATS_HEAD,
        _stats_row("GET", "/v1/recommendations/[user] [two_tower]", 300, 0, 20, 30.0),
        _stats_row("GET", "/v1/recommendations/[user] [als]", 100, 0, 40, 10.0),
        _stats_row("POST", "/v1/recommendations [popular]", 50, 0, 5, 5.0),
        _stats_row("GET", "/v1/recommendations/[user] [error]", 10, 10, 3, 1.0),
        _stats_row("", "Aggregated", 460, 10, 20, 46.0),
    ]
    Path(f"{prefix}_stats.csv").write_text("\n".join(stats) + "\n")
    # Cumulative counts per name, one row per second; the primary fails at t=2 (all als).
    hist = [HIST_HEAD]
    tt, als = 0, 0
    for t in range(5):
        tt += 0 if t == 2 else 10
        als += 10 if t == 2 else 0
        hist.append(_hist_row(1000 + t, 5, "GET", "/v1/recommendations/[user] [two_tower]", tt))
        hist.append(_hist_row(1000 + t, 5, "GET", "/v1/recommendations/[user] [als]", als))
        hist.append(_hist_row(1000 + t, 5, "", "Aggregated", tt + als, rps=10.0))
    Path(f"{prefix}_stats_history.csv").write_text("\n".join(hist) + "\n")
    return prefix


def test_tier_of_reads_the_bracket() -> None:
    assert tier_of("/v1/recommendations/[user] [two_tower]") == "two_tower"
    assert tier_of("/v1/recommendations [popular]") == "popular"
    assert tier_of("Aggregated") == "-"


def test_fallback_share_per_second(csvs: Path) -> None:
    import pandas as pd

    share = fallback_share_series(pd.read_csv(f"{csvs}_stats_history.csv"))
    assert list(share["fallback_share"].round(2)) == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert list(share["total"]) == [10, 10, 10, 10, 10]


def test_loadtest_report_writes_plots_and_summary(csvs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    summary = loadtest_report(csv_prefix=csvs, out_dir=out)
    for png in ("throughput.png", "latency_by_tier.png", "fallback_share.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    text = summary.read_text()
    assert "HTTP requests: 460, failures: 10" in text
    assert "| GET | two_tower | 300 | 0 | 20 |" in text
    assert "| POST | popular | 50 |" in text
    assert "| GET | error | 10 | 10 |" in text
    assert "mean fallback share: 20.0%" in text


def test_loadtest_report_says_which_csv_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"locust_stats\.csv"):
        loadtest_report(csv_prefix=tmp_path / "locust", out_dir=tmp_path)


def _results() -> list[DrillResult]:
    ok = DrillResult(
        "D1",
        "Triton SIGKILL",
        [Check("non-2xx", "0", "<= 0", True), Check("p99", "80 ms", "<= 250 ms", True, True)],
    )
    bad = DrillResult(
        "D7",
        "spike",
        [Check("shed", "0.0%", "<= 30%", True), Check("p99", "900 ms", "<= 500 ms", False, True)],
    )
    bad.samples = [Sample(0.5, 0.01, 200, "two_tower", "", "GET")]
    bad.figures["sent_rps"] = 123.4
    bad.notes.append("the gateway does not shed")
    return [ok, bad]


def test_drill_table_and_markdown() -> None:
    results = _results()
    assert results[0].passed and not results[1].passed and results[1].behaviour_passed
    table = drill_table(results)
    assert "D1     PASS" in table and "D7     FAIL" in table and "p99 [t]" in table
    assert "sent_rps=123.4" in table and "the gateway does not shed" in table
    md = drill_markdown(results)
    assert "| D7 | FAIL | shed | 0.0% | <= 30% | ok |" in md


def test_write_drill_report(tmp_path: Path) -> None:
    path = write_drill_report(_results(), tmp_path)
    assert path.read_text().startswith("# Cascade fault drills")
    payload = json.loads((tmp_path / "results.json").read_text())
    assert [r["passed"] for r in payload] == [True, False] and "samples" not in payload[1]
    assert (tmp_path / "D7_samples.csv").read_text().splitlines()[
        1
    ] == "0.5000,10.00,200,two_tower,,GET"


def test_the_headline_splits_http_requests_into_recommendations_and_event_batches(
    csvs: Path, tmp_path: Path
) -> None:
    """Locust's total counts event batches too; the outcomes section counts recommendations
    only: the headline says how the two figures relate."""
    stats = Path(f"{csvs}_stats.csv")
    rows = stats.read_text().splitlines()
    rows.insert(-1, _stats_row("POST", "/v1/events", 40, 0, 9, 4.0))
    rows[-1] = _stats_row("", "Aggregated", 500, 10, 20, 50.0)
    stats.write_text("\n".join(rows) + "\n")
    text = loadtest_report(csv_prefix=csvs, out_dir=tmp_path / "r").read_text()
    assert "HTTP requests: 500 (460 recommendations, 40 event batches), failures: 10" in text
    assert "latency (all, events included)" in text
    assert "mean fallback share: 20.0%" in text  # event batches have no tier: not in the share
