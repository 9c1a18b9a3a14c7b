"""The synthetic profiles: ``sessions`` (the default) has bursts, sequential dependence and
popularity drift; ``uniform`` is the generator as it was before profiles, row for row.

The statistics come from :mod:`cascade.data.logstats`, the same figures the README reports.
Seeds are fixed, so every figure asserted here is exact for this code; the margins are wide
against the figures across seeds 0-2 (in comments), so a change to the model that keeps its
character keeps these tests green.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from cascade.data.logstats import burst_stats, drift_stats, log_statistics, sequence_stats
from cascade.data.profiles import DEFAULT_PROFILE, Profile
from cascade.data.synthetic import SCALES, WINDOW_DAYS, WINDOW_START, Scale, generate

SMALL = Scale(users=2000, items=1000, interactions=40_000, clusters=10)


def _fingerprint(df: pd.DataFrame) -> str:
    """sha256 of a frame's values, column by column (independent of the parquet writer)."""
    h = hashlib.sha256()
    for column in df.columns:
        values = df[column]
        if values.dtype == object:
            h.update("\x00".join(map(str, values)).encode())
        elif str(values.dtype).startswith("datetime"):
            h.update(values.to_numpy("datetime64[us]").astype(np.int64).tobytes())
        else:
            h.update(np.ascontiguousarray(values.to_numpy()).tobytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def small():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(SCALES, "small", SMALL)
        yield {p: generate(scale="small", seed=0, profile=p) for p in Profile}


def test_sessions_is_the_default():
    assert DEFAULT_PROFILE is Profile.SESSIONS
    assert generate(scale="tiny", seed=3).extra == {"profile": "sessions"}


@pytest.mark.parametrize(
    ("seed", "rows", "interactions", "users", "items"),
    [
        (7, 9162, "57a35074969b4d81", "fee9fedef5f1525d", "33f0118131b7cc5b"),
        (42, 8907, "22a4b955feae13b5", "334a77ce1bd39406", "ef6271dd30ee551b"),
    ],
)
def test_uniform_reproduces_the_generator_before_profiles(seed, rows, interactions, users, items):
    # Fingerprints of cascade/data/synthetic.py as of 1443e6a, the generator before profiles.
    ds = generate(scale="tiny", seed=seed, profile="uniform")
    assert len(ds.interactions) == rows
    assert _fingerprint(ds.interactions) == interactions
    assert _fingerprint(ds.users) == users and _fingerprint(ds.items) == items
    assert ds.extra == {"profile": "uniform"}


def test_profiles_share_users_and_items_and_differ_in_interactions(small):
    sessions, uniform = small[Profile.SESSIONS], small[Profile.UNIFORM]
    pd.testing.assert_frame_equal(sessions.users, uniform.users)
    pd.testing.assert_frame_equal(sessions.items, uniform.items)
    assert not sessions.interactions.equals(uniform.interactions)


def test_sessions_deterministic_by_seed():
    a = generate(scale="tiny", seed=11, profile="sessions")
    b = generate(scale="tiny", seed=11, profile=Profile.SESSIONS)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    assert not a.interactions.equals(generate(scale="tiny", seed=12).interactions)


@pytest.mark.parametrize("profile", list(Profile))
def test_rows_pairs_and_time_bounds(small, profile):
    ds = small[profile]
    i = ds.interactions
    assert len(i) == SMALL.interactions  # asked for, and got, the scale's count
    assert not i.duplicated(["user_id", "item_id"]).any()
    assert i.timestamp.is_monotonic_increasing  # in time order, as before
    signup = i.user_id.map(ds.users.set_index("user_id").signup_date)
    release = i.item_id.map(ds.items.set_index("item_id").release_date)
    assert (i.timestamp >= signup).all() and (i.timestamp >= release).all()
    start = pd.Timestamp(WINDOW_START, tz="UTC")
    assert (i.timestamp >= start).all()
    assert (i.timestamp < start + pd.Timedelta(days=WINDOW_DAYS)).all()
    assert i.rating.between(1, 5).all()


def test_sessions_never_overlap_within_a_user(small):
    i = small[Profile.SESSIONS].interactions
    assert not i.duplicated(["user_id", "timestamp"]).any()


def test_bursts(small):
    b = burst_stats(small[Profile.SESSIONS].interactions)
    u = burst_stats(small[Profile.UNIFORM].interactions)
    # seeds 0-2: one-day share 0.70-0.71; gaps 41-43 s within, 170-207 h between sessions
    assert b["one_day_share"] > 0.6 and u["one_day_share"] < 0.01
    assert b["within_session_gap_median_s"] < 120
    assert b["between_session_gap_median_h"] > 24
    assert b["gaps_within_sessions_share"] > 0.85 and u["gaps_within_sessions_share"] < 0.05
    assert b["users_over_30_days_share"] > 0.15  # and some users stay for months
    assert 1.5 < b["sessions_per_user_mean"] < 5


def test_sequential_signal(small):
    s = sequence_stats(small[Profile.SESSIONS].interactions, small[Profile.SESSIONS].items)
    u = sequence_stats(small[Profile.UNIFORM].interactions, small[Profile.UNIFORM].items)
    # seeds 0-2: category kept 0.45 vs 0.30 shuffled; next-item hits ~4.5x the shuffled order
    assert s["next_same_category"] > 1.3 * s["next_same_category_shuffled"]
    assert s["sequential_lift"] > 2.5
    assert u["sequential_lift"] < 1.3  # the uniform profile has no order to learn


def test_popularity_drifts(small):
    s = drift_stats(small[Profile.SESSIONS].interactions)
    u = drift_stats(small[Profile.UNIFORM].interactions)
    # seeds 0-2: Spearman 0.48-0.61 (sessions) vs 0.70-0.73 (uniform: sampling noise only)
    assert s["popularity_spearman"] < 0.65
    assert s["popularity_spearman"] < u["popularity_spearman"] - 0.1


def test_unknown_profile():
    with pytest.raises(
        ValueError, match="unknown profile 'bursty'; choose one of sessions, uniform"
    ):
        generate(scale="tiny", profile="bursty")


def test_log_statistics_on_a_hand_made_log():
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    sec = pd.Timedelta(seconds=1)
    day10 = t0 + pd.Timedelta(days=10)
    # user 1: one burst of three (60 s apart); user 2: two sessions ten days apart
    log = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 2, 2],
            "item_id": [10, 11, 12, 10, 11, 12, 13],
            "timestamp": [
                t0,
                t0 + 60 * sec,
                t0 + 120 * sec,
                t0,
                t0 + 30 * sec,
                day10,
                day10 + 90 * sec,
            ],
        }
    )
    items = pd.DataFrame({"item_id": [10, 11, 12, 13], "category": ["a", "a", "b", "b"]})
    stats = log_statistics(log, items)
    assert stats["interactions"] == 7 and stats["one_day_share"] == 0.5
    assert stats["within_session_gap_median_s"] == 60.0
    assert stats["between_session_gap_median_h"] == pytest.approx(240, abs=0.01)
    assert stats["sessions_per_user_mean"] == 1.5
    assert stats["next_same_category"] == pytest.approx(3 / 5)  # a-a, b-b in user 2
