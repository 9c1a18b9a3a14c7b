"""Reports: the drill table (terminal + markdown + JSON) and the load-test report from Locust CSVs.

Load-test report (:func:`loadtest_report`) reads Locust's ``<prefix>_stats.csv`` and
``<prefix>_stats_history.csv`` (written with ``--csv-full-history``). Request names carry the
serving tier (``GET /v1/recommendations [two_tower]``, see ``loadtests/locustfile.py``), so
per-tier latency percentiles come from the stats rows and the fallback share over time from the
per-name history rows. It writes ``throughput.png``, ``latency_by_tier.png``,
``fallback_share.png`` and ``summary.md`` (matplotlib, Agg backend).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cascade.drills.analysis import DrillResult

_TIER = re.compile(r"\[([A-Za-z0-9_-]+)\]\s*$")
PERCENTILES = ("50%", "90%", "95%", "99%", "99.9%")


# -- drills ------------------------------------------------------------------------------------


def drill_rows(results: Sequence[DrillResult]) -> list[list[str]]:
    """One row per check: drill, verdict (on its first row), check, figure, limit, ok."""
    rows = []
    for result in results:
        for i, c in enumerate(result.checks):
            mark = "ok" if c.ok else ("n/a" if c.ok is None else "FAIL")
            rows.append(
                [
                    result.drill if i == 0 else "",
                    ("PASS" if result.passed else "FAIL") if i == 0 else "",
                    c.name + (" [t]" if c.timing else ""),
                    c.value,
                    c.limit,
                    mark,
                ]
            )
    return rows


def drill_table(results: Sequence[DrillResult]) -> str:
    """A plain-text table for the terminal (``[t]``: a wall-clock latency threshold)."""
    head = ["drill", "verdict", "check", "figure", "limit", ""]
    rows = [head, *drill_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for result in results:
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in result.figures.items())
        lines.append(f"{result.drill} {result.title}: {figures}")
        lines.extend(f"{result.drill} note: {n}" for n in result.notes)
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def drill_markdown(results: Sequence[DrillResult]) -> str:
    """The table as markdown, with each drill's figures under it."""
    out = [
        "| drill | verdict | check | figure | limit | |",
        "|---|---|---|---|---|---|",
    ]
    out += ["| " + " | ".join(row) + " |" for row in drill_rows(results)]
    out.append("")
    out.append(
        "`[t]`: a wall-clock latency threshold (judged by `make drill`, printed only in CI)."
    )
    out.append("")
    for result in results:
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in result.figures.items())
        out.append(f"- **{result.drill}** {result.title}: {figures}")
        out.extend(f"  - {n}" for n in result.notes)
    return "\n".join(out) + "\n"


def write_drill_report(results: Sequence[DrillResult], out_dir: Path) -> Path:
    """``summary.md`` and ``results.json`` in ``out_dir``; returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = []
    for r in results:
        row = {**asdict(r), "passed": r.passed, "behaviour_passed": r.behaviour_passed}
        row.pop("samples")
        payload.append(row)
        with (out_dir / f"{r.drill}_samples.csv").open("w") as f:
            f.write("t,latency_ms,status,tier,reason,method\n")
            for s in r.samples:
                f.write(
                    f"{s.t:.4f},{s.latency * 1000:.2f},{s.status},{s.tier},{s.reason},{s.method}\n"
                )
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    path = out_dir / "summary.md"
    path.write_text("# Cascade fault drills\n\n" + drill_markdown(results))
    return path


# -- load test ---------------------------------------------------------------------------------


EVENTS_NAME = "/v1/events"  # the locustfile's event requests: not recommendations


def _is_event(names: Any) -> Any:
    """Rows of ``POST /v1/events`` (kept out of the fallback share: they have no tier)."""
    return names.astype(str).str.contains(EVENTS_NAME, regex=False)


def tier_of(name: str) -> str:
    """The tier in a Locust request name (``... [als]``), ``-`` when absent."""
    match = _TIER.search(str(name))
    return match.group(1) if match else "-"


def _read(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"Locust CSV not found: {path} (did Locust run with --csv?)")
    return pd.read_csv(path)


def tier_latency(stats: Any) -> Any:
    """Per (method, tier) rows: requests, failures, percentiles (ms), rps."""
    rows = stats[stats["Name"] != "Aggregated"].copy()
    rows["tier"] = rows["Name"].map(tier_of)
    cols = ["Type", "tier", "Request Count", "Failure Count", *PERCENTILES, "Requests/s"]
    return rows[cols].sort_values(["tier", "Type"]).reset_index(drop=True)


def fallback_share_series(history: Any) -> Any:
    """Per second: requests by tier and the share not served by ``two_tower``.

    Locust's full history holds cumulative counts per name; differences give per-interval counts.
    """
    import pandas as pd

    rows = history[(history["Name"] != "Aggregated") & ~_is_event(history["Name"])].copy()
    if rows.empty:
        return pd.DataFrame(columns=["t", "total", "fallback_share"])
    rows["tier"] = rows["Name"].map(tier_of)
    t0 = history["Timestamp"].min()
    rows["t"] = rows["Timestamp"] - t0
    wide = rows.pivot_table(
        index="t", columns=["Type", "Name"], values="Total Request Count", aggfunc="max"
    ).sort_index()
    per_interval = wide.ffill().fillna(0).diff().fillna(wide.ffill().fillna(0)).clip(lower=0)
    tiers = [tier_of(name) for _, name in per_interval.columns]
    by_tier = per_interval.T.groupby(tiers).sum().T
    total = by_tier.sum(axis=1)
    served = total - by_tier.get("error", 0)
    primary = by_tier.get("two_tower", 0)
    out = by_tier.copy()
    out["total"] = total
    out["fallback_share"] = ((served - primary) / served.where(served > 0)).fillna(0.0)
    return out.reset_index()


def throughput_series(history: Any) -> Any:
    agg = history[history["Name"] == "Aggregated"].copy()
    agg["t"] = agg["Timestamp"] - history["Timestamp"].min()
    return agg[["t", "Requests/s", "Failures/s", "User Count"]]


def loadtest_report(*, csv_prefix: Path, out_dir: Path, title: str = "Cascade load test") -> Path:
    """Plots and ``summary.md`` from Locust's CSVs; returns the summary's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = _read(Path(f"{csv_prefix}_stats.csv"))
    history = _read(Path(f"{csv_prefix}_stats_history.csv"))
    out_dir.mkdir(parents=True, exist_ok=True)
    tiers = tier_latency(stats)
    share = fallback_share_series(history)
    thr = throughput_series(history)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(thr["t"], thr["Requests/s"], label="requests/s")
    ax.plot(thr["t"], thr["Failures/s"], label="failures/s")
    ax2 = ax.twinx()
    ax2.plot(thr["t"], thr["User Count"], color="grey", linestyle=":", label="users")
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests/s")
    ax2.set_ylabel("users")
    ax.legend(loc="upper left")
    ax.set_title("Throughput")
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels = [f"{r['Type']} {r['tier']}" for _, r in tiers.iterrows()]
    width = 0.8 / len(PERCENTILES)
    for i, pct in enumerate(PERCENTILES):
        ax.bar(
            [x + i * width for x in range(len(labels))],
            tiers[pct],
            width=width,
            label=f"p{pct[:-1]}",
        )
    ax.set_xticks(
        [x + 0.4 - width / 2 for x in range(len(labels))], labels, rotation=20, fontsize=8
    )
    ax.set_ylabel("ms")
    ax.set_title("Latency percentiles per tier")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "latency_by_tier.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    if not share.empty:
        ax.plot(share["t"], share["fallback_share"] * 100)
    ax.set_xlabel("seconds")
    ax.set_ylabel("% not served by two_tower")
    ax.set_ylim(0, 100)
    ax.set_title("Fallback share over time")
    fig.tight_layout()
    fig.savefig(out_dir / "fallback_share.png", dpi=100)
    plt.close(fig)

    agg = stats[stats["Name"] == "Aggregated"].iloc[0]
    total = int(agg["Request Count"])
    named = stats[stats["Name"] != "Aggregated"]
    events = int(named.loc[_is_event(named["Name"]), "Request Count"].sum())
    # Locust counts every HTTP request; the outcomes section below counts recommendation
    # answers only: the split says where two different "requests" figures come from.
    split = f" ({total - events} recommendations, {events} event batches)" if events else ""
    lines = [
        f"# {title}",
        "",
        f"- HTTP requests: {total}{split}, failures: {int(agg['Failure Count'])}, "
        f"throughput: {float(agg['Requests/s']):.1f} requests/s",
        f"- latency (all{', events included' if events else ''}): "
        f"p50 {agg['50%']:.0f} ms, p95 {agg['95%']:.0f} ms, p99 {agg['99%']:.0f} ms",
        f"- mean fallback share: {_mean_share(share):.1%} (recommendations not served by "
        "two_tower, cold_start included; the section below leaves cold_start out)",
        "",
        "| method | tier | requests | failures | p50 ms | p90 ms | p95 ms | p99 ms | p99.9 ms | req/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in tiers.iterrows():
        cells = [r["Type"], r["tier"], int(r["Request Count"]), int(r["Failure Count"])]
        cells += [f"{r[p]:.0f}" for p in PERCENTILES] + [f"{r['Requests/s']:.1f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        "![throughput](throughput.png)",
        "![latency by tier](latency_by_tier.png)",
        "![fallback share](fallback_share.png)",
        "",
    ]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _mean_share(share: Any) -> float:
    if share.empty or share["total"].sum() == 0:
        return 0.0
    return float((share["fallback_share"] * share["total"]).sum() / share["total"].sum())
