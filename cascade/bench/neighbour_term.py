"""Screen of the item-neighbour term (``two_tower.item_neighbours``) on the test split.

The term is part of the served primary (gamma chosen with the prior's beta on validation by
``cascade train two-tower``); this screen shows what it adds on the test split. For the newest
Two-Tower artifact trained on the data set's train split it prints test Recall@20 of the tower
(with its prior), of the neighbour term alone, and of ``tower + gamma * term`` for every gamma of
``GAMMA_GRID``. gamma is *not* chosen on validation here, so the best row is an optimistic
screen, not a result:

    cascade train two-tower --data demo --train-split
    python -m cascade.bench.neighbour_term --data demo
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from cascade.data.errors import DataSourceError
from cascade.evaluation.model_data import ModelUnavailable, prepare_data
from cascade.evaluation.split import SplitParams
from cascade.runtime.paths import Layout
from cascade.runtime.schema import ITEM_ID, USER_ID

K = 20
BATCH = 1024


def recall_at_k(scores: np.ndarray, seen: list[np.ndarray], relevant: list[np.ndarray]) -> float:
    """Mean ``|top K ∩ R| / min(K, |R|)`` with each row's ``seen`` columns masked."""
    scores = scores.copy()
    for row, cols in enumerate(seen):
        scores[row, cols] = -np.inf
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    hits = [len(np.intersect1d(t, r)) / min(K, len(r)) for t, r in zip(top, relevant, strict=True)]
    return float(np.mean(hits))


def main(argv: list[str] | None = None) -> int:
    from two_tower.item_neighbours import GAMMA_GRID, NeighbourTerm, build_neighbours
    from two_tower.recommender import load_two_tower

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="demo")
    args = parser.parse_args(argv)
    layout = Layout.from_env()
    try:
        data, test = prepare_data(layout=layout, spec=args.data, split=SplitParams())
        rec = load_two_tower(layout=layout, dataset=data)
    except (DataSourceError, ModelUnavailable) as exc:
        print(f"neighbour_term: {exc}", file=sys.stderr)
        return 2
    rec.neighbour_term = None  # the screen adds its own term to the tower's scores
    items = rec.item_ids
    started = time.perf_counter()
    term = NeighbourTerm(items, build_neighbours(data.train, items), gamma=1.0)
    built = time.perf_counter() - started

    users = np.unique(test[USER_ID].to_numpy(np.int64))
    pos = rec._positions(users)
    users, pos = users[pos >= 0], pos[pos >= 0]

    def col(ids: np.ndarray) -> np.ndarray:  # every id is in the artifact's item vocabulary
        return np.asarray(np.searchsorted(items, ids), dtype=np.int64)

    by_user = test.groupby(USER_ID)[ITEM_ID]
    relevant = [col(by_user.get_group(u).to_numpy(np.int64)) for u in users]
    train_by_user = data.train.groupby(USER_ID)[ITEM_ID]
    seen = [col(train_by_user.get_group(u).to_numpy(np.int64)) for u in users]
    tower, neighbour = [], []
    started = time.perf_counter()
    for start in range(0, len(pos), BATCH):
        rows = rec.rows.take(pos[start : start + BATCH])
        tower.append(rec.scores(rows))
        with torch.inference_mode():
            neighbour.append(term(torch.as_tensor(np.asarray(rows.seen_items))).numpy())
    scored = time.perf_counter() - started
    tower_scores, term_scores = np.concatenate(tower), np.concatenate(neighbour)
    print(
        f"{args.data}: {len(users):,} test users, {len(items):,} items; neighbour tables built "
        f"in {built:.1f} s, all users scored in {scored:.1f} s"
    )
    print("| scores | test Recall@20 |\n|---|---:|")
    print(f"| tower (with its prior) | {recall_at_k(tower_scores, seen, relevant):.4f} |")
    print(f"| neighbour term alone | {recall_at_k(term_scores, seen, relevant):.4f} |")
    for gamma in GAMMA_GRID[1:]:
        fused = tower_scores + gamma * term_scores
        print(f"| tower + {gamma} x term | {recall_at_k(fused, seen, relevant):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
