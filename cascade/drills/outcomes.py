"""The load test's answers by fallback reason and by 503 cause (``summary.md``'s second half).

Reads what the locustfile counted (``loadtests/outcomes.py``: per second, method, status, tier,
fallback reason, error cause) and writes:

- the **fallback share excluding cold_start**: 2xx answers not served by ``two_tower`` whose
  reason is not ``cold_start``, over the 2xx answers that are not ``cold_start`` (an unknown
  user can only get ``popular``: that is no degradation). ``cold_start`` is listed apart.
- the fallback share **by reason** (same denominator), so one reason can be seen dominating;
- the non-2xx answers **by cause**: the error body's ``code``, and for ``overloaded`` which shed
  rule refused it (``overloaded/in_flight``, ``overloaded/queue_time``);
- the same per window of ``window_s`` seconds, to tell a transient from a mode it stays in.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PRIMARY = "two_tower"
COLD_START = "cold_start"
NO_REASON = "(no reason given)"


@dataclass(frozen=True)
class Outcome:
    """``n`` answers alike, in second ``s`` of the run."""

    s: int
    method: str
    status: int
    tier: str
    reason: str
    cause: str
    n: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def read_outcomes(path: Path) -> list[Outcome]:
    """The locustfile's counts (``CASCADE_LOADTEST_OUTCOMES``); FileNotFoundError when absent."""
    payload = json.loads(path.read_text())
    return [
        Outcome(
            s=int(r["s"]),
            method=str(r["method"]),
            status=int(r["status"]),
            tier=str(r["tier"]),
            reason=str(r["reason"]),
            cause=str(r["cause"]),
            n=int(r["n"]),
        )
        for r in payload["rows"]
    ]


@dataclass(frozen=True)
class Breakdown:
    """Counts of a set of outcomes (see the module docstring for the definitions)."""

    requests: int
    ok: int
    cold_start: int
    fallback_by_reason: dict[str, int]  # eligible (non-cold_start) 2xx not from the primary
    causes: dict[str, int]  # non-2xx: "<status> <cause>"

    @property
    def eligible(self) -> int:
        return self.ok - self.cold_start

    @property
    def fallback(self) -> int:
        return sum(self.fallback_by_reason.values())

    @property
    def fallback_share(self) -> float | None:
        """Fallback share excluding cold_start (None: no eligible answer)."""
        return self.fallback / self.eligible if self.eligible else None

    @property
    def failures(self) -> int:
        return self.requests - self.ok

    def cause_count(self, status: int) -> int:
        return sum(n for key, n in self.causes.items() if key.split(" ", 1)[0] == str(status))

    @property
    def shed_share(self) -> float | None:
        """503 answers over all requests."""
        return self.cause_count(503) / self.requests if self.requests else None


def breakdown(outcomes: Iterable[Outcome]) -> Breakdown:
    requests = ok = cold = 0
    reasons: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    for o in outcomes:
        requests += o.n
        if not o.ok:
            causes[f"{o.status} {o.cause or '-'}"] += o.n
            continue
        ok += o.n
        if o.reason == COLD_START:
            cold += o.n
        elif o.tier != PRIMARY:
            reasons[o.reason or NO_REASON] += o.n
    return Breakdown(requests, ok, cold, dict(reasons.most_common()), dict(causes.most_common()))


def by_window(outcomes: Sequence[Outcome], window_s: int) -> list[tuple[int, Breakdown]]:
    """``(window start, breakdown)`` for each ``window_s`` seconds of the run."""
    groups: dict[int, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.s // window_s * window_s, []).append(o)
    return [(start, breakdown(groups[start])) for start in sorted(groups)]


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def markdown(outcomes: Sequence[Outcome], *, window_s: int = 10) -> str:
    """The section ``summary.md`` gets: headline, reasons, causes, and the per-window table."""
    b = breakdown(outcomes)
    top = next(iter(b.fallback_by_reason), "-")
    lines = [
        "## Answers by fallback reason and 503 cause",
        "",
        f"- recommendation requests: {b.requests}, 2xx: {b.ok}, failures (non-2xx): {b.failures}"
        f" ({_pct(b.failures, b.requests)})",
        f"- **fallback share excluding cold_start: {_share(b.fallback_share)}**"
        f" ({b.fallback}/{b.eligible} 2xx answers not from {PRIMARY}; top reason: {top})",
        f"- cold_start (unknown users, not counted above): {b.cold_start}"
        f" ({_pct(b.cold_start, b.ok)} of 2xx)",
        f"- 503 share: {_share(b.shed_share)} of requests",
        "",
        "| fallback reason | answers | share of non-cold_start 2xx |",
        "|---|---|---|",
    ]
    lines += [
        f"| {reason} | {n} | {_pct(n, b.eligible)} |" for reason, n in b.fallback_by_reason.items()
    ] or ["| (none) | 0 | 0.0% |"]
    lines += [f"| {COLD_START} (apart) | {b.cold_start} | - |", ""]
    lines += ["| status | cause | answers | share of requests |", "|---|---|---|---|"]
    lines += [
        f"| {key.split(' ', 1)[0]} | {key.split(' ', 1)[1]} | {n} | {_pct(n, b.requests)} |"
        for key, n in b.causes.items()
    ] or ["| - | (no failures) | 0 | 0.0% |"]
    lines += [
        "",
        f"Per {window_s} s (the same definitions):",
        "",
        "| from s | requests | fallback excl. cold_start | top reason | 503 share | failures |",
        "|---|---|---|---|---|---|",
    ]
    for start, w in by_window(outcomes, window_s):
        reason = next(iter(w.fallback_by_reason), "-")
        lines.append(
            f"| {start} | {w.requests} | {_share(w.fallback_share)} | {reason} | "
            f"{_share(w.shed_share)} | {w.failures} |"
        )
    return "\n".join(lines) + "\n"
