"""Sticky assignment: stable per user, monotone in the share, shares within tolerance."""

from __future__ import annotations

import pytest

from gateway.rollout.assign import BUCKETS, bucket, in_candidate

USERS = range(100_000)


def test_bucket_range_and_stability() -> None:
    assert all(0 <= bucket("r1", u) < BUCKETS for u in range(1000))
    assert [bucket("r1", u) for u in range(50)] == [bucket("r1", u) for u in range(50)]
    # another rollout reshuffles users
    assert sum(bucket("r1", u) != bucket("r2", u) for u in range(1000)) > 990


@pytest.mark.parametrize("percent", [1, 5, 25, 50])
def test_shares_within_tolerance(percent: float) -> None:
    n = sum(in_candidate("rollout-7", u, percent) for u in USERS)
    expected = len(USERS) * percent / 100
    # binomial sd at 100K users is at most 158; 4 sd
    assert abs(n - expected) < 4 * (expected * (1 - percent / 100)) ** 0.5


def test_monotone_users_keep_their_arm_as_share_grows() -> None:
    arms = {p: {u for u in USERS if in_candidate("r9", u, p)} for p in (1, 5, 25, 50)}
    assert arms[1] <= arms[5] <= arms[25] <= arms[50]
    assert not any(in_candidate("r9", u, 0) for u in range(1000))
