"""Statistics of an interaction log: bursts, sequential signal and popularity drift.

For any data set (synthetic or real), so that the synthetic profiles can be compared with real
logs on the same footing:

- ``one_day_share``: users whose interactions all lie within 24 hours of their first.
- Sessions: a user's log split at gaps over ``session_gap_s`` (30 min); the median gap within
  and between sessions, sessions per user.
- ``next_same_category``: how often consecutive interactions of a user share the item category,
  against the same figure after shuffling each user's items in time (``..._shuffled``): the
  user's taste is the same in both, only the order differs.
- ``markov_hit@10``: a first-order model (each item's 10 most frequent successors, counted on
  half of the users) predicting the next item of the other half; against the same users'
  shuffled sequences. ``sequential_lift`` is the ratio: 1 means order carries nothing.
- ``popularity_spearman``: rank correlation of item interaction counts in the first and in the
  last 30 days of the log, over the items used in the first 30 days (1: popularity does not
  move); ``top100_overlap``: the share of the first month's 100 most popular items that are
  among the last month's 100.

``python -m cascade.data.logstats DATASET_DIR`` prints them as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_DAY = pd.Timedelta(days=1)


def _sorted(interactions: pd.DataFrame) -> pd.DataFrame:
    return interactions.sort_values(["user_id", "timestamp"], kind="stable", ignore_index=True)


def burst_stats(interactions: pd.DataFrame, *, session_gap_s: float = 1800) -> dict[str, float]:
    """One-day share of users and session figures (see the module docstring)."""
    df = _sorted(interactions)
    span = df.groupby("user_id")["timestamp"].agg(["min", "max"])
    one_day = float(((span["max"] - span["min"]) < _DAY).mean())
    same = df["user_id"].to_numpy()[1:] == df["user_id"].to_numpy()[:-1]
    ts = df["timestamp"].to_numpy("datetime64[s]").astype(np.int64)
    gap = np.diff(ts)[same]
    within = gap[gap <= session_gap_s]
    between = gap[gap > session_gap_s]
    sessions = len(span) + len(between)
    return {
        "users": len(span),
        "one_day_share": round(one_day, 4),
        "within_session_gap_median_s": float(np.median(within)) if len(within) else float("nan"),
        "between_session_gap_median_h": round(float(np.median(between)) / 3600, 2)
        if len(between)
        else float("nan"),
        "gaps_within_sessions_share": round(len(within) / max(len(gap), 1), 4),
        "sessions_per_user_mean": round(sessions / max(len(span), 1), 3),
        "users_over_30_days_share": round(
            float(((span["max"] - span["min"]) > 30 * _DAY).mean()), 4
        ),
    }


def _pairs(user: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    same = user[1:] == user[:-1]
    return item[:-1][same], item[1:][same]


def _shuffle_within_user(user: np.ndarray, item: np.ndarray, seed: int) -> np.ndarray:
    """``item`` permuted within each user's block (``user`` sorted)."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(user)), user))
    out: np.ndarray = item[order]
    return out


def _markov_hit(
    train_prev: np.ndarray, train_next: np.ndarray, prev: np.ndarray, nxt: np.ndarray, k: int
) -> float:
    counts = (
        pd.DataFrame({"prev": train_prev, "next": train_next})
        .value_counts()
        .rename("n")
        .reset_index()
        .sort_values(["prev", "n", "next"], ascending=[True, False, True], kind="stable")
    )
    top = counts.groupby("prev", sort=False).head(k)
    n_items = int(max(prev.max(initial=0), nxt.max(initial=0), top["next"].max()) + 1)
    known = top["prev"].to_numpy(np.int64) * n_items + top["next"].to_numpy(np.int64)
    keys = prev.astype(np.int64) * n_items + nxt
    return float(np.isin(keys, known).mean())


def sequence_stats(
    interactions: pd.DataFrame, items: pd.DataFrame, *, k: int = 10, seed: int = 0
) -> dict[str, float]:
    """Category continuity and first-order predictability, each against shuffled order."""
    df = _sorted(interactions)
    user = df["user_id"].to_numpy()
    item = df["item_id"].to_numpy()
    shuffled = _shuffle_within_user(user, item, seed)
    category = pd.Series(pd.factorize(items["category"])[0], index=items["item_id"])
    cat = category.reindex(item).to_numpy()
    cat_shuffled = category.reindex(shuffled).to_numpy()
    a, b = _pairs(user, cat)
    sa, sb = _pairs(user, cat_shuffled)
    same, same_shuffled = float((a == b).mean()), float((sa == sb).mean())
    # Successors counted on even users, predicted on odd ones (ordered, then shuffled).
    train = (user % 2) == 0
    tp, tn = _pairs(user[train], item[train])
    ep, en = _pairs(user[~train], item[~train])
    sp, sn = _pairs(user[~train], shuffled[~train])
    hit, hit_shuffled = _markov_hit(tp, tn, ep, en, k), _markov_hit(tp, tn, sp, sn, k)
    return {
        "next_same_category": round(same, 4),
        "next_same_category_shuffled": round(same_shuffled, 4),
        f"markov_hit@{k}": round(hit, 4),
        f"markov_hit@{k}_shuffled": round(hit_shuffled, 4),
        "sequential_lift": round(hit / hit_shuffled, 2) if hit_shuffled else float("inf"),
    }


def drift_stats(interactions: pd.DataFrame, *, days: int = 30) -> dict[str, float]:
    """How the popularity of the items used in the first ``days`` of the log compares with
    theirs in the last ``days`` (items new since are left out: their rise is no drift)."""
    ts = interactions["timestamp"]
    first = interactions.loc[ts < ts.min() + pd.Timedelta(days=days), "item_id"].value_counts()
    last = interactions.loc[ts > ts.max() - pd.Timedelta(days=days), "item_id"].value_counts()
    both = pd.concat([first.rename("first"), last.rename("last")], axis=1).fillna(0)
    both = both[both["first"] > 0]
    top_first = set(first.index[:100])
    top_last = set(last.index[:100])
    return {
        "popularity_spearman": round(float(both["first"].corr(both["last"], method="spearman")), 4),
        "top100_overlap": round(len(top_first & top_last) / 100, 2),
    }


def log_statistics(interactions: pd.DataFrame, items: pd.DataFrame) -> dict[str, Any]:
    """All the figures of the module docstring, plus the row count."""
    return {
        "interactions": len(interactions),
        **burst_stats(interactions),
        **sequence_stats(interactions, items),
        **drift_stats(interactions),
    }


if __name__ == "__main__":
    from cascade.data.dataset import read_dataset

    data = read_dataset(Path(sys.argv[1]))
    print(json.dumps(log_statistics(data.interactions, data.items), indent=2))
