"""Drill D11's verdict and report from a result (the drill itself runs real processes:
``python -m cascade.drills.d11_rollout``)."""

from __future__ import annotations

from typing import Any

from cascade.drills.d11_rollout import expected, format_report


def variant(name: str, decision: str, non_2xx: int = 0) -> dict[str, Any]:
    return {
        "variant": name, "candidate": 3, "decision": decision, "reason": "errors worse",
        "seconds": 4.8, "requests": 193, "non_2xx": non_2xx, "served_by_candidate": 0,
        "routed_to_candidate": 29, "exposure": 0.0, "routed": 0.15, "p99_ms": 25.3,
        "statuses": {"503": non_2xx} if non_2xx else {}, "notes": [],
    }  # fmt: skip


def result(*variants: dict[str, Any]) -> dict[str, Any]:
    return {"rate": 40.0, "baseline_p99_ms": 19.7, "baseline_requests": 600,
            "total_requests": 5506, "total_non_2xx": 0, "variants": list(variants)}  # fmt: skip


def test_pass_needs_rollbacks_a_promotion_and_no_errors() -> None:
    ok = result(variant("garbage", "rolled_back"), variant("good", "promoted"))
    assert expected(ok) == [] and format_report(ok).endswith("PASSED")
    bad = result(variant("slow", "promoted"), variant("good", "rolled_back", non_2xx=3))
    problems = expected(bad)
    assert "slow: promoted, expected rolled_back" in problems
    assert "good: 3 non-2xx answers" in problems
    assert "FAILED" in format_report(bad) and "'503': 3" in format_report(bad)
