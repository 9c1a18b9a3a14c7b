"""Pure figures over drill samples: windows, percentiles, recovery times, and the result types.

Every pass criterion is a :class:`Check`. A check marked ``timing`` compares a wall-clock
latency with a threshold: ``make drill`` judges it, CI prints it but does not assert it (shared
2-core machines are noisy); the behavioural checks (status codes, tiers, breaker states,
recovery) are asserted everywhere.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cascade.drills.load import CLIENT_ERROR, NOT_SENT, Sample

PRIMARY = "two_tower"


@dataclass(frozen=True)
class Check:
    """One pass criterion with its measured figure."""

    name: str
    value: str
    limit: str
    ok: bool | None  # None: could not be measured (counts as a failure)
    timing: bool = False


@dataclass
class DrillResult:
    """A drill's verdict, checks and raw figures (for the report)."""

    drill: str
    title: str
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, float | int | str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list, repr=False)  # every request, for the CSV
    marks: dict[str, float] = field(default_factory=dict)  # phase times, seconds since start

    @property
    def passed(self) -> bool:
        return all(c.ok is True for c in self.checks)

    @property
    def behaviour_passed(self) -> bool:
        """Every check that is not a wall-clock latency threshold passed."""
        return all(c.ok is True for c in self.checks if not c.timing)

    def failed_checks(self, *, include_timing: bool = True) -> list[Check]:
        return [c for c in self.checks if c.ok is not True and (include_timing or not c.timing)]


def window(samples: Iterable[Sample], start: float, end: float = math.inf) -> list[Sample]:
    """Samples of requests sent in ``[start, end)`` (generator-skipped ones excluded)."""
    return [s for s in samples if start <= s.t < end and s.status != NOT_SENT]


def not_sent(samples: Iterable[Sample]) -> int:
    return sum(1 for s in samples if s.status == NOT_SENT)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def p99_ms(samples: Sequence[Sample]) -> float | None:
    value = percentile([s.latency for s in samples], 99)
    return None if value is None else value * 1000


def p99_stderr_ms(samples: Sequence[Sample], rounds: int = 200, seed: int = 0) -> float | None:
    """Bootstrap standard error of :func:`p99_ms`: how far two runs' p99s differ by chance."""
    values = [s.latency for s in samples]
    if len(values) < 2:
        return None
    rng = random.Random(seed)
    estimates = [percentile(rng.choices(values, k=len(values)), 99) or 0.0 for _ in range(rounds)]
    return statistics.pstdev(estimates) * 1000


def non_2xx(samples: Iterable[Sample]) -> int:
    """Answers that were not 2xx, client timeouts and connection errors included."""
    return sum(1 for s in samples if not 200 <= s.status < 300)


def status_counts(samples: Iterable[Sample]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for s in samples:
        counts[s.status] = counts.get(s.status, 0) + 1
    return dict(sorted(counts.items()))


def eligible(samples: Iterable[Sample]) -> list[Sample]:
    """Requests the primary could serve: 200s not answered as ``cold_start`` (unknown users)."""
    return [s for s in samples if s.status == 200 and s.reason != "cold_start"]


def primary_share(samples: Sequence[Sample]) -> float | None:
    pool = eligible(samples)
    return None if not pool else sum(s.tier == PRIMARY for s in pool) / len(pool)


def recovery_time(
    samples: Sequence[Sample],
    *,
    since: float,
    share: float = 0.95,
    bucket_s: float = 1.0,
    horizon_s: float = 60.0,
    reasons_not_allowed: frozenset[str] = frozenset(),
) -> float | None:
    """Seconds from ``since`` to the end of the first ``bucket_s`` window (sliding by half a
    bucket) where at least ``share`` of the eligible requests were served by the primary and none
    had a reason in ``reasons_not_allowed``; None if it never happened within ``horizon_s``."""
    step = bucket_s / 2
    start = since
    while start < since + horizon_s:
        chunk = eligible(window(samples, start, start + bucket_s))
        if chunk:
            ok_share = sum(s.tier == PRIMARY for s in chunk) / len(chunk)
            bad = any(s.reason in reasons_not_allowed for s in chunk)
            if ok_share >= share and not bad:
                return start + bucket_s - since
        elif start > max((s.t for s in samples), default=since):
            return None
        start += step
    return None


def latency_recovery_time(
    samples: Sequence[Sample], *, since: float, target_ms: float, bucket_s: float = 1.0
) -> float | None:
    """Seconds from ``since`` to the end of the first window whose p99 is at most ``target_ms``."""
    last = max((s.t for s in samples), default=since)
    start = since
    while start <= last:
        chunk = [s for s in window(samples, start, start + bucket_s) if s.status == 200]
        p99 = p99_ms(chunk)
        if p99 is not None and p99 <= target_ms:
            return start + bucket_s - since
        start += bucket_s / 2
    return None


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def fmt_share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def leq(name: str, value: float | None, limit: float, *, unit: str, timing: bool = False) -> Check:
    """``value <= limit`` (``unit`` ``ms``, ``s`` or ``count``)."""
    text = {"ms": fmt_ms, "s": fmt_s}.get(unit, lambda v: "n/a" if v is None else f"{v:g}")
    return Check(
        name, text(value), f"<= {text(limit)}", None if value is None else value <= limit, timing
    )


def client_errors(samples: Iterable[Sample]) -> int:
    return sum(1 for s in samples if s.status == CLIENT_ERROR)


def client_error_kinds(samples: Iterable[Sample]) -> dict[str, int]:
    """Client-side errors by kind (``ReadTimeout``, ``ConnectError`` ...)."""
    kinds: dict[str, int] = {}
    for s in samples:
        if s.status == CLIENT_ERROR:
            kinds[s.reason or "?"] = kinds.get(s.reason or "?", 0) + 1
    return kinds


def fallback_share(samples: Sequence[Sample]) -> float | None:
    """Share of the eligible answers (200, not ``cold_start``) the primary did not serve."""
    share = primary_share(samples)
    return None if share is None else 1.0 - share


def shed_share(samples: Sequence[Sample]) -> float | None:
    """Share of the requests sent that were answered 503."""
    return sum(s.status == 503 for s in samples) / len(samples) if samples else None


def share_recovery_time(
    samples: Sequence[Sample],
    *,
    since: float,
    share_of: Callable[[Sequence[Sample]], float | None],
    at_most: float,
    bucket_s: float = 1.0,
    horizon_s: float = 60.0,
) -> float | None:
    """Seconds from ``since`` to the end of the first ``bucket_s`` window (sliding by half a
    bucket) where ``share_of(window)`` is at most ``at_most`` (``recovery_time`` for any share,
    e.g. :func:`fallback_share` or :func:`shed_share`); None if not within ``horizon_s``."""
    last = max((s.t for s in samples), default=since)
    start = since
    while start < since + horizon_s and start <= last:
        value = share_of(window(samples, start, start + bucket_s))
        if value is not None and value <= at_most + 1e-9:
            return start + bucket_s - since
        start += bucket_s / 2
    return None
