"""Shared helpers of the benchmark modules: markdown tables, the footer, the report files."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cascade.runtime.paths import Layout

KNOWN_SCALES = ("tiny", "demo", "large")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers right-aligned, ``None`` shown as ``-``."""
    if any(len(r) != len(headers) for r in rows):
        raise ValueError("every row needs one cell per header")

    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value).replace("|", "\\|")

    numeric = [
        bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
        for i in range(len(headers))
    ]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def machine_footer(*, load_before: Sequence[float] | None = None) -> str:
    """One line: when, where, and the load average (others share this machine)."""
    now = os.getloadavg()
    parts = [
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        f"{os.cpu_count()} CPUs ({platform.machine()})",
    ]
    if load_before is not None:
        parts.append("load average at start " + "/".join(f"{x:.2f}" for x in load_before))
    parts.append("load average at end " + "/".join(f"{x:.2f}" for x in now) + " (1/5/15 min)")
    return "_" + "; ".join(parts) + "._"


def met(value: float | None, limit: float, *, below: bool = True) -> str:
    """``yes`` / ``NO`` for a target (``value <= limit`` when ``below``), ``-`` when unmeasured."""
    if value is None or value != value:  # None or NaN
        return "-"
    return "yes" if (value <= limit if below else value >= limit) else "NO"


def parse_scales(text: str) -> list[str]:
    """``"demo,large"`` -> ``["demo", "large"]``; unknown names raise ``ValueError``."""
    scales = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scales if s not in KNOWN_SCALES]
    if not scales or unknown:
        raise ValueError(f"scales must be a comma list of {', '.join(KNOWN_SCALES)} (got {text!r})")
    return scales


def reports_dir(layout: Layout | None = None) -> Path:
    """``$CASCADE_HOME/reports/bench``."""
    return (layout or Layout.from_env()).reports_dir / "bench"


def write_report(
    name: str, *, markdown: str, data: dict[str, Any], directory: Path | None = None
) -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.json`` under ``directory``; return both paths."""
    out = directory or reports_dir()
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{name}.md", out / f"{name}.json"
    md.write_text(markdown.rstrip() + "\n")
    js.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return md, js
