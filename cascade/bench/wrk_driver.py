"""The serving benchmark's closed loop run by ``wrk`` (C, one thread), and its output parsed.

``wrk`` costs far less CPU per request than a Python client, which matters when the load
generator shares the cores with what it measures. Requests are
``GET /v1/recommendations/{user}?k=`` for users drawn uniformly from ``min(users)..max(users)``.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from cascade.bench.closed_loop import BenchRow

_WRK_SCRIPT = """
local lo, hi, k = %d, %d, %d
request = function()
  return wrk.format("GET", "/v1/recommendations/" .. math.random(lo, hi) .. "?k=" .. k)
end
"""


def wrk_ms(text: str, label: str) -> float:
    """The latency (ms) on ``wrk --latency``'s line ``label`` (``50%``, ``99%``); NaN if absent."""
    match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk_row(target: str, concurrency: int, out: str) -> BenchRow:
    """One row from ``wrk --latency``'s output: requests, req/s, non-2xx and socket errors."""
    found_requests = re.search(r"(\d+) requests in", out)
    found_rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = int(found_requests.group(1)) if found_requests else 0
    rps = float(found_rps.group(1)) if found_rps else 0.0
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += (
        sum(
            int(n)
            for n in re.findall(
                r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
            )[0]
        )
        if "Socket errors" in out
        else 0
    )
    return BenchRow(
        target=target,
        concurrency=concurrency,
        requests=requests,
        errors=errors,
        rps=rps,
        p50_ms=wrk_ms(out, "50%"),
        p99_ms=wrk_ms(out, "99%"),
        served_by="wrk",
    )


def bench_wrk(
    target: str,
    base_url: str,
    *,
    concurrency: int,
    duration_s: float,
    users: Sequence[int],
    k: int,
    on_measure: Callable[[], None] | None = None,
) -> BenchRow:
    """The same closed loop with ``wrk`` (C, one thread): far less CPU than a Python client.

    ``on_measure`` is called between the 1 s warm-up and the measured run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT % (min(users), max(users), k))
    try:
        subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", "-d1s", "-s", script.name, base_url],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # warm-up
        if on_measure:
            on_measure()
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(duration_s))}s",
                "--latency",
                "-s",
                script.name,
                base_url,
            ],
            capture_output=True,
            text=True,
            timeout=duration_s + 30,
            check=False,
        ).stdout
    finally:
        Path(script.name).unlink(missing_ok=True)
    return wrk_row(target, concurrency, out)
