"""What each Locust request got back, counted per second: tier, fallback reason, error cause.

Imports only the stdlib (the stock Locust image runs it). The locustfile records every answer
with :meth:`Outcomes.add` and writes the counts to ``CASCADE_LOADTEST_OUTCOMES`` (JSON) when
Locust stops; ``cascade.drills.outcomes`` turns them into the summary's tables.

- ``reason``: a 2xx answer's ``X-Fallback-Reason`` header, else the body's ``fallback_reason``
  (``""`` when the primary served it).
- ``cause``: a non-2xx answer's error ``code`` from its JSON body; for ``overloaded`` also which
  shed rule refused it, from the detail text: ``overloaded/in_flight`` (the adaptive in-flight
  limit) or ``overloaded/queue_time`` (waited past the queue-time threshold). No status at all
  (timeout, refused connection) is status 0 with the exception's name as the cause.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

FORMAT = "cascade-loadtest-outcomes/1"
KEYS = ("s", "method", "status", "tier", "reason", "cause")


def _json(body: bytes | str | None) -> dict[str, object]:
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def shed_kind(detail: str) -> str:
    """Which shed rule an ``overloaded`` detail names: ``in_flight``, ``queue_time`` or ``""``."""
    text = detail.lower()
    if "in flight" in text or "in_flight" in text:
        return "in_flight"
    if text.startswith("queued") or "queue" in text:
        return "queue_time"
    return ""


def error_cause(status: int, body: bytes | str | None, error: object = None) -> str:
    """The cause of a non-2xx answer (see the module docstring); ``""`` for a 2xx."""
    if 200 <= status < 300:
        return ""
    if not status:
        return type(error).__name__ if error is not None else "no_response"
    payload = _json(body)
    code = str(payload.get("code") or f"http_{status}")
    if code == "overloaded":
        kind = shed_kind(str(payload.get("detail") or ""))
        return f"{code}/{kind}" if kind else code
    return code


def fallback_reason(status: int, headers: object, body: bytes | str | None) -> str:
    """Why a 2xx answer did not come from the primary (``""``: it did, or not a 2xx)."""
    if not 200 <= status < 300:
        return ""
    get = getattr(headers, "get", None)
    reason = str(get("X-Fallback-Reason") or "") if get else ""
    if reason:
        return reason
    tier = str(get("X-Served-By") or "") if get else ""
    if tier in ("", "two_tower"):
        return ""
    return str(_json(body).get("fallback_reason") or "")


class Outcomes:
    """Counts per (second since the first answer, method, status, tier, reason, cause)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[int, str, int, str, str, str]] = Counter()
        self.t0: float | None = None

    def add(
        self, method: str, status: int, tier: str, reason: str, cause: str, now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        if self.t0 is None:
            self.t0 = now
        second = max(0, int(now - self.t0))
        self.counts[(second, method, int(status), tier, reason, cause)] += 1

    def to_json(self) -> dict[str, object]:
        rows = [dict(zip(KEYS, key, strict=True), n=n) for key, n in sorted(self.counts.items())]
        return {"format": FORMAT, "t0": self.t0, "rows": rows}

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json()) + "\n")
        tmp.replace(path)
