"""Sticky canary assignment: a user's arm depends only on (rollout id, user id) and the share.

``bucket(rollout_id, user_id)`` is a stable hash in ``[0, 10000)``; the user is in the
candidate arm iff ``bucket < percent * 100``. Monotone: a user in the candidate arm at 5% stays
in it at 25% (the threshold only rises), so nobody flips back and forth between versions while a
rollout widens; a new rollout id reshuffles users, so the same 1% do not test every candidate.
BLAKE2b rather than Python's ``hash`` (salted per process): every replica agrees.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000


def bucket(rollout_id: str, user_id: int) -> int:
    """The user's bucket for this rollout, in ``[0, BUCKETS)``."""
    digest = hashlib.blake2b(f"{rollout_id}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def threshold(percent: float) -> int:
    """Buckets below this serve the candidate (percent 1 -> 100 buckets of 10,000)."""
    return max(0, min(BUCKETS, round(percent * BUCKETS / 100)))


def in_candidate(rollout_id: str, user_id: int, percent: float) -> bool:
    """Whether ``user_id`` is served by the candidate at ``percent``."""
    return percent > 0 and bucket(rollout_id, user_id) < threshold(percent)
