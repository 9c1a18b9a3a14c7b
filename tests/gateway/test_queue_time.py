"""Parsing the ingress's arrival stamp (X-Request-Start)."""

from __future__ import annotations

import pytest

from gateway.edge.queue_time import ARRIVED_KEY, MAX_WAIT_S, queued_for, upstream_wait

NOW = 1_764_000_000.5  # a wall-clock time (seconds since the epoch)


@pytest.mark.parametrize(
    ("value", "waited"),
    [
        (b"t=1764000000.250", 0.25),  # nginx: t=${msec}
        ("t=1764000000.250", 0.25),
        (b"1764000000250", 0.25),  # whole milliseconds (Heroku)
        (b"t=1764000000250000", 0.25),  # whole microseconds
        (b"  t=1764000000.5  ", 0.0),
        (b"t=1764000000.9", 0.0),  # 0.4 s in the future: clock skew, counts as no wait
    ],
)
def test_stamps_in_every_common_form(value: bytes | str, waited: float) -> None:
    assert upstream_wait(value, NOW) == pytest.approx(waited, abs=1e-6)


@pytest.mark.parametrize(
    "value",
    [None, b"", b"t=", b"soon", b"t=nan", b"-5", b"0", b"t=1764000005.0", b"t=1763990000.0"],
)
def test_unusable_stamps_are_ignored(value: bytes | None) -> None:
    """Unparseable, non-positive, far in the future (skew) or older than MAX_WAIT_S."""
    assert upstream_wait(value, NOW) is None


def test_the_oldest_stamp_still_used() -> None:
    assert upstream_wait(f"t={NOW - MAX_WAIT_S + 0.001:.3f}", NOW) == pytest.approx(
        MAX_WAIT_S - 0.001, abs=1e-3
    )


def test_queued_for_reads_the_arrival_from_the_scope_state() -> None:
    assert queued_for({ARRIVED_KEY: 10.0}, 10.25) == pytest.approx(0.25)
    assert queued_for({}, 10.25) is None
