"""The shared table, target and report helpers of the benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascade.bench import table


def test_markdown_table_aligns_numbers_and_formats_cells() -> None:
    text = table.markdown_table(
        ["name", "seconds", "rows"], [["a|b", 1.234, 1_000_000], ["c", 1234.5, None]]
    )
    lines = text.splitlines()
    assert lines[0] == "| name | seconds | rows |"
    assert lines[1] == "|---|---:|---:|"
    assert lines[2] == "| a\\|b | 1.23 | 1,000,000 |"
    assert lines[3] == "| c | 1,234 | - |"


def test_markdown_table_refuses_ragged_rows() -> None:
    with pytest.raises(ValueError, match="one cell per header"):
        table.markdown_table(["a", "b"], [[1]])


@pytest.mark.parametrize(
    ("value", "limit", "below", "expected"),
    [
        (1.0, 2.0, True, "yes"),
        (3.0, 2.0, True, "NO"),
        (600.0, 500.0, False, "yes"),
        (None, 1.0, True, "-"),
        (float("nan"), 1.0, True, "-"),
    ],
)
def test_met(value: float | None, limit: float, below: bool, expected: str) -> None:
    assert table.met(value, limit, below=below) == expected


def test_parse_scales() -> None:
    assert table.parse_scales("demo, large") == ["demo", "large"]
    for bad in ("", "demo,huge"):
        with pytest.raises(ValueError, match="tiny, demo, large"):
            table.parse_scales(bad)


def test_footer_names_the_load_average() -> None:
    footer = table.machine_footer(load_before=(1.0, 2.0, 3.0))
    assert "load average at start 1.00/2.00/3.00" in footer
    assert "load average at end" in footer


def test_write_report(tmp_path: Path) -> None:
    md, js = table.write_report("x", markdown="# t", data={"a": 1}, directory=tmp_path)
    assert md.read_text() == "# t\n"
    assert json.loads(js.read_text()) == {"a": 1}
