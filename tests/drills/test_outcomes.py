"""The load test's answers by fallback reason and 503 cause: recording (stdlib, as the locustfile
uses it) and the summary's aggregation. No processes, no Locust."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascade.drills.outcomes import (
    Outcome,
    breakdown,
    by_window,
    markdown,
    read_outcomes,
)
from loadtests.outcomes import Outcomes, error_cause, fallback_reason, shed_kind

IN_FLIGHT = json.dumps(
    {"code": "overloaded", "detail": "too many requests in flight; retry shortly"}
)
QUEUED = json.dumps({"code": "overloaded", "detail": "queued 180 ms before serving; retry shortly"})


def test_shed_kind_reads_the_gateway_details() -> None:
    assert shed_kind("too many requests in flight; retry shortly") == "in_flight"
    assert shed_kind("queued 180 ms before serving; retry shortly") == "queue_time"
    assert shed_kind("something else") == ""


def test_error_cause_by_code_and_shed_rule() -> None:
    assert error_cause(200, b"{}") == ""
    assert error_cause(503, IN_FLIGHT) == "overloaded/in_flight"
    assert error_cause(503, QUEUED.encode()) == "overloaded/queue_time"
    assert error_cause(503, json.dumps({"code": "overloaded", "detail": "?"})) == "overloaded"
    assert error_cause(503, json.dumps({"code": "not_ready", "detail": "warming"})) == "not_ready"
    assert error_cause(429, json.dumps({"code": "rate_limited"})) == "rate_limited"
    assert error_cause(502, b"<html>bad gateway</html>") == "http_502"
    assert error_cause(0, None, ConnectionResetError()) == "ConnectionResetError"
    assert error_cause(0, None) == "no_response"


def test_fallback_reason_header_first_then_body() -> None:
    headers = {"X-Served-By": "als", "X-Fallback-Reason": "features_unavailable"}
    assert fallback_reason(200, headers, None) == "features_unavailable"
    body = json.dumps({"served_by": "popular", "fallback_reason": "breaker_open"})
    assert fallback_reason(200, {"X-Served-By": "popular"}, body) == "breaker_open"
    assert fallback_reason(200, {"X-Served-By": "two_tower"}, body) == ""
    assert fallback_reason(503, headers, IN_FLIGHT) == ""


def test_outcomes_count_per_second_and_round_trip(tmp_path: Path) -> None:
    rec = Outcomes()
    rec.add("GET", 200, "two_tower", "", "", now=100.0)
    rec.add("GET", 200, "two_tower", "", "", now=100.9)
    rec.add("POST", 503, "", "", "overloaded/in_flight", now=101.2)
    rec.write(tmp_path / "outcomes.json")
    rows = read_outcomes(tmp_path / "outcomes.json")
    assert rows == [
        Outcome(0, "GET", 200, "two_tower", "", "", 2),
        Outcome(1, "POST", 503, "", "", "overloaded/in_flight", 1),
    ]


def _run() -> list[Outcome]:
    """100 requests: 50 primary, 10 cold_start, 20 features_unavailable (als), 5 breaker_open
    (popular), 10 shed in_flight, 4 shed queue_time, 1 timeout. Seconds 0-9 and 10-19."""
    return [
        Outcome(0, "GET", 200, "two_tower", "", "", 50),
        Outcome(1, "GET", 200, "popular", "cold_start", "", 10),
        Outcome(12, "GET", 200, "als", "features_unavailable", "", 20),
        Outcome(13, "POST", 200, "popular", "breaker_open", "", 5),
        Outcome(14, "GET", 503, "", "", "overloaded/in_flight", 10),
        Outcome(15, "GET", 503, "", "", "overloaded/queue_time", 4),
        Outcome(16, "GET", 0, "", "", "ReadTimeout", 1),
    ]


def test_breakdown_excludes_cold_start_from_the_headline() -> None:
    b = breakdown(_run())
    assert (b.requests, b.ok, b.cold_start, b.eligible, b.failures) == (100, 85, 10, 75, 15)
    assert b.fallback_by_reason == {"features_unavailable": 20, "breaker_open": 5}
    assert b.fallback_share == pytest.approx(25 / 75)
    assert b.causes == {"503 overloaded/in_flight": 10, "503 overloaded/queue_time": 4,
                        "0 ReadTimeout": 1}  # fmt: skip
    assert b.cause_count(503) == 14 and b.shed_share == pytest.approx(0.14)


def test_breakdown_of_nothing_and_of_an_unexplained_fallback() -> None:
    empty = breakdown([])
    assert empty.fallback_share is None and empty.shed_share is None
    odd = breakdown([Outcome(0, "GET", 200, "als", "", "", 3)])
    assert odd.fallback_by_reason == {"(no reason given)": 3} and odd.fallback_share == 1.0


def test_by_window_splits_a_transient_from_a_mode() -> None:
    windows = by_window(_run(), 10)
    assert [start for start, _ in windows] == [0, 10]
    first, second = windows[0][1], windows[1][1]
    assert first.fallback_share == 0.0 and first.shed_share == 0.0
    assert second.fallback_share == 1.0 and second.shed_share == pytest.approx(14 / 40)


def test_markdown_tables() -> None:
    text = markdown(_run(), window_s=10)
    assert "**fallback share excluding cold_start: 33.3%**" in text
    assert "top reason: features_unavailable" in text
    assert "| features_unavailable | 20 | 26.7% |" in text
    assert "| breaker_open | 5 | 6.7% |" in text
    assert "| cold_start (apart) | 10 | - |" in text
    assert "| 503 | overloaded/in_flight | 10 | 10.0% |" in text
    assert "| 503 | overloaded/queue_time | 4 | 4.0% |" in text
    assert "| 0 | ReadTimeout | 1 | 1.0% |" in text
    assert "| 10 | 40 | 100.0% | features_unavailable | 35.0% | 15 |" in text
    assert "503 share: 14.0% of requests" in text


def test_loadtest_summary_section_when_nothing_was_recorded(tmp_path: Path) -> None:
    from cascade.drills.loadtest import _outcomes_section

    assert "not recorded" in _outcomes_section(tmp_path / "outcomes.json")


# locust monkey-patches the stdlib with gevent on import: never in the pytest process.
LOCUST_RECORD = r"""
import json, sys
from pathlib import Path
from loadtests import locustfile

class R:
    def __init__(self, status, headers, content=b"", error=None):
        self.status_code, self.headers, self.content, self.error = status, headers, content, error

locustfile.record("GET", R(200, {"X-Served-By": "two_tower"}))
locustfile.record("GET", R(200, {"X-Served-By": "als", "X-Fallback-Reason": "timeout"}))
locustfile.record("POST", R(200, {"X-Served-By": "popular"}, b'{"fallback_reason": "cold_start"}'))
body = json.dumps({"code": "overloaded", "detail": "too many requests in flight"}).encode()
locustfile.record("GET", R(503, {}, body))
locustfile.record("GET", R(0, {}, None, TimeoutError()))
locustfile._write_outcomes()
rows = json.loads(Path(sys.argv[1]).read_text())["rows"]
print(sorted((r["status"], r["tier"], r["reason"], r["cause"]) for r in rows))
"""


def test_locustfile_records_each_answer(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "outcomes.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    env["CASCADE_LOADTEST_OUTCOMES"] = str(path)
    result = subprocess.run(
        [sys.executable, "-c", LOCUST_RECORD, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(
        sorted(
            [
                (200, "two_tower", "", ""),
                (200, "als", "timeout", ""),
                (200, "popular", "cold_start", ""),
                (503, "", "", "overloaded/in_flight"),
                (0, "", "", "TimeoutError"),
            ]
        )
    )
