"""``cascade evaluate`` never shows a personalised model at the popularity level without saying
so, and why when the reason is known (issue 14: the Two-Tower on real logs, 86% of whose training
rows had an empty history, scored like popularity with no warning)."""

from __future__ import annotations

from typing import Any

from cascade.evaluation.report import HEADLINE, Report, popularity_level_warnings


def report(recalls: dict[str, float], params: dict[str, dict[str, Any]] | None = None) -> Report:
    return Report(
        dataset="csv",
        checksum=None,
        split=None,
        users_evaluated=10,
        users_with_test_items=10,
        catalogue_size=100,
        models={name: dict.fromkeys(HEADLINE, value) for name, value in recalls.items()},
        seconds={},
        params=params or {},
    )


def test_a_model_at_the_popularity_level_is_warned_with_the_empty_history_share() -> None:
    r = report(
        {"popular": 0.114, "als": 0.203, "two_tower": 0.111},
        {"two_tower": {"empty_history_share": 0.86}},
    )
    (warning,) = popularity_level_warnings(r)
    assert warning.startswith("two_tower is at the popularity level (Recall@20 0.97x popular)")
    assert "86% of its training rows had an empty user history" in warning


def test_without_a_known_reason_the_warning_still_appears() -> None:
    (warning,) = popularity_level_warnings(report({"popular": 0.1, "two_tower": 0.105}))
    assert "adds little to popularity" in warning


def test_models_clearly_above_popularity_are_not_warned() -> None:
    assert popularity_level_warnings(report({"popular": 0.1, "als": 0.2, "ease": 0.25})) == []


def test_warnings_are_in_the_markdown() -> None:
    r = report({"popular": 0.1, "two_tower": 0.1})
    r.warnings = popularity_level_warnings(r)
    assert "WARNING: two_tower is at the popularity level" in r.to_markdown()
