"""Evaluate several recommenders on one split and write ``report.json``, ``report.md`` and
``recall_at_k.png`` (Recall@K for K = 1..50, one line per model)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from cascade.evaluation.metrics import HEADLINE, MAX_K, evaluate_recommender, ground_truth
from cascade.recommenders import Recommender

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
RECALL_PLOT = "recall_at_k.png"
BASELINE = "popular"
_LABELS = {
    "recall@10": "Recall@10",
    "recall@20": "Recall@20",
    "ndcg@10": "NDCG@10",
    "ndcg@20": "NDCG@20",
    "hit_rate@10": "HitRate@10",
    "coverage@10": "Coverage@10",
}


@dataclass
class Report:
    """Metrics of each model on one data set and split (``models[name]`` holds the metrics)."""

    dataset: str
    checksum: str | None
    split: dict[str, Any] | None
    users_evaluated: int
    users_with_test_items: int
    catalogue_size: int
    models: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # a model's report_params
    warnings: list[str] = field(default_factory=list)  # see popularity_level_warnings
    generated_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ratio(
        self, model: str, metric: str = "recall@20", baseline: str = BASELINE
    ) -> float | None:
        """``model``'s metric over the baseline's, or None when either is missing or zero."""
        if model not in self.models or baseline not in self.models:
            return None
        base = float(self.models[baseline][metric])
        return float(self.models[model][metric]) / base if base > 0 else None

    def to_markdown(self) -> str:
        """The models side by side, one row per metric, then each model's gain over popularity."""
        names = list(self.models)
        lines = [
            f"Evaluation on `{self.dataset}`: {self.users_evaluated} users evaluated "
            f"(of {self.users_with_test_items} with test items), catalogue {self.catalogue_size} items.",
            "",
            "| metric | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for key in HEADLINE:
            cells = " | ".join(f"{self.models[n][key]:.4f}" for n in names)
            lines.append(f"| {_LABELS[key]} | {cells} |")
        gains = [
            f"{n} Recall@20 = {r:.2f}x {BASELINE}"
            for n in names
            if n != BASELINE and (r := self.ratio(n)) is not None
        ]
        if gains:
            lines += ["", "; ".join(gains) + "."]
        for name, params in self.params.items():
            settings = ", ".join(f"{key} = {_format(value)}" for key, value in params.items())
            lines += ["", f"Parameters of {name}: {settings}."]
        for name, why in self.skipped.items():
            lines += ["", f"Skipped {name}: {why}"]
        for warning in self.warnings:
            lines += ["", f"WARNING: {warning}"]
        return "\n".join(lines) + "\n"


# A personalised model within this factor of popularity's Recall@20 is at the popularity level.
POPULARITY_LEVEL = 1.10
# A training set where more than this share of rows had no user history (two_tower.training_frames).
EMPTY_HISTORY_SHARE = 0.5


def popularity_level_warnings(report: Report) -> list[str]:
    """A line for each personalised model at the popularity level, with the known reason: the
    share of its training rows that had an empty user history (issue 14: 86% on a real log)."""
    out = []
    for name in report.models:
        ratio = report.ratio(name)
        if name == BASELINE or ratio is None or ratio > POPULARITY_LEVEL:
            continue
        line = f"{name} is at the popularity level (Recall@20 {ratio:.2f}x {BASELINE})"
        share = report.params.get(name, {}).get("empty_history_share")
        if isinstance(share, float) and share > EMPTY_HISTORY_SHARE:
            line += (
                f": {share:.0%} of its training rows had an empty user history, so the user "
                "tower learned to score without one (users with one interaction, or a log whose "
                "users act in a single burst)"
            )
        else:
            line += ": its ranking adds little to popularity on this data"
        out.append(line + ".")
    return out


def _format(value: Any) -> str:
    """A parameter for the markdown report: floats to 4 significant digits, containers inline."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return str(value)


def evaluate(
    models: Sequence[Recommender],
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    dataset: str = "",
    checksum: str | None = None,
    split: dict[str, Any] | None = None,
    max_users: int | None = None,
    seed: int = 0,
    batch_size: int = 1024,
    out_dir: Path | None = None,
    skipped: dict[str, str] | None = None,
) -> Report:
    """Evaluate ``models`` on ``(train, test)`` with the same users and rules for every model.

    Full ranking over the catalogue, each user's train items excluded (definitions in
    :mod:`cascade.evaluation.metrics`). ``max_users`` samples the evaluated users (seeded).
    With ``out_dir``, writes the report files there. A model's ``report_params`` (a dict, when
    it has one) goes into the report beside its metrics.
    """
    truth = ground_truth(train, test, max_users=max_users, seed=seed)
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for model in models:
        started = time.perf_counter()
        results[model.name] = evaluate_recommender(model, truth, batch_size=batch_size, max_k=MAX_K)
        seconds[model.name] = round(time.perf_counter() - started, 3)
        logger.info(
            "evaluated %s on %d users in %.1f s",
            model.name,
            len(truth.user_ids),
            seconds[model.name],
        )
    report = Report(
        dataset=dataset,
        checksum=checksum,
        split=split,
        users_evaluated=len(truth.user_ids),
        users_with_test_items=truth.total_users,
        catalogue_size=truth.catalogue_size,
        models=results,
        seconds=seconds,
        skipped=dict(skipped or {}),
        params={
            model.name: dict(params)
            for model in models
            if isinstance(params := getattr(model, "report_params", None), dict) and params
        },
    )
    report.warnings = popularity_level_warnings(report)
    for warning in report.warnings:
        logger.warning("%s", warning)
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``recall_at_k.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / REPORT_JSON,
        "markdown": out_dir / REPORT_MD,
        "plot": out_dir / RECALL_PLOT,
    }
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    paths["markdown"].write_text(report.to_markdown())
    plot_recall_curves(report, paths["plot"])
    logger.info("wrote report to %s", out_dir)
    return paths


def plot_recall_curves(report: Report, path: Path) -> None:
    """Recall@K for K = 1..50, one line per model (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        for name, metrics in report.models.items():
            curve = metrics["recall_curve"]
            ax.plot(range(1, len(curve) + 1), curve, label=name, linewidth=2)
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K")
        ax.set_title(f"Recall@K on {report.dataset} ({report.users_evaluated} users)")
        ax.set_xlim(1, MAX_K)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if report.models:
            ax.legend()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
