"""Offline Two-Tower recommender: the ``Recommender`` of ``cascade evaluate`` and ``recommend``.

A user's tower input is their state at the end of the training data (``user_state`` of the
training interactions + profile), exactly what the gateway reads from Feast when the online
store was materialized from that data. Scores are one matrix product against the item
embeddings saved with the artifact; the user's training items and ``exclude`` are masked. A
user without training interactions gets the popular items (the contract's cold-start rule).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from cascade.recommenders import PAD_ITEM, PopularityRecommender, UserItems, check_request, top_k
from cascade.runtime.schema import ITEM_ID, USER_ID
from two_tower import contract, feature_settings
from two_tower.data import ItemRows, UserRows, user_rows, user_table

if TYPE_CHECKING:
    from cascade.evaluation.model_data import ModelData
    from cascade.runtime.paths import Layout
    from two_tower.artifacts import TrainedTwoTower
    from two_tower.item_neighbours import NeighbourTerm
    from two_tower.model import TowerEnsemble, TwoTower

logger = logging.getLogger(__name__)


def user_vectors(
    model: TwoTower | TowerEnsemble, rows: UserRows, *, batch_size: int = 4096
) -> torch.Tensor:
    """User tower output for ``rows`` (CPU float32), in batches, no grad."""
    device = next(model.parameters()).device
    out = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            part = rows.take(np.arange(start, min(start + batch_size, len(rows))))
            t = {k: torch.as_tensor(v, device=device) for k, v in part.as_dict().items()}
            out.append(
                model.user_tower(
                    t["user_id"],
                    t["age_bucket"],
                    t["country"],
                    t["interaction_count"],
                    t["recent_items"],
                    t["seen_items"],
                ).cpu()
            )
    return torch.cat(out) if out else torch.zeros((0, model.cfg.out_dim))


def item_vectors(
    model: TwoTower | TowerEnsemble, rows: ItemRows, *, batch_size: int = 8192
) -> np.ndarray:
    """Item tower output for ``rows`` as float32 numpy, in batches, no grad."""
    device = next(model.parameters()).device
    out = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            part = rows.take(np.arange(start, min(start + batch_size, len(rows))))
            t = {k: torch.as_tensor(v, device=device) for k, v in part.as_dict().items()}
            out.append(
                model.item_tower(
                    t["item_id"], t["category"], t["price_bucket"], t["popularity"], t["age_days"]
                ).cpu()
            )
    vectors = torch.cat(out) if out else torch.zeros((0, model.cfg.out_dim))
    result: np.ndarray = vectors.numpy().astype(np.float32)
    return result


class TwoTowerRecommender:
    """Top-k over ``item_ids`` by ``user vector @ item_embeddings.T``; see the module docstring."""

    name = "two_tower"
    report_params: dict[str, Any]  # set by load_two_tower: artifact, beta, gamma, empty history

    def __init__(
        self,
        *,
        model: TwoTower | TowerEnsemble,
        item_ids: np.ndarray,
        item_embeddings: np.ndarray,
        users: pd.DataFrame,
        seen: UserItems,
        popular: PopularityRecommender,
        item_bias: np.ndarray | None = None,
        neighbour_term: NeighbourTerm | None = None,
    ) -> None:
        self.model = model  # scored on the model's own device; results come back to the CPU
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.item_emb_t = torch.from_numpy(
            np.ascontiguousarray(np.asarray(item_embeddings, np.float32).T)
        )
        table = users.sort_values(USER_ID).reset_index(drop=True)
        self.user_ids = table[USER_ID].to_numpy(np.int64)
        # The neighbour term reads every seen item the online store holds (as Triton gets them);
        # the tower itself pools only its newest seen_pool.
        seen_len = contract.MAX_SEEN_ITEMS if neighbour_term is not None else model.cfg.seen_pool
        self.rows = user_rows(table, seen_len=max(seen_len, 1))
        self.seen = seen
        self.popular = popular
        # The recent-popularity prior (two_tower.item_prior), added to every user's scores.
        self.item_bias = (
            None
            if item_bias is None
            else torch.from_numpy(np.asarray(item_bias, np.float32).reshape(-1))
        )
        # The item-neighbour term (two_tower.item_neighbours) over the seen items, when any.
        self.neighbour_term = neighbour_term

    @classmethod
    def from_trained(
        cls,
        trained: TrainedTwoTower,
        *,
        interactions: pd.DataFrame,
        users: pd.DataFrame | None = None,
    ) -> TwoTowerRecommender:
        """Recommender with each user's state at the end of ``interactions`` (the training data).

        ``users`` holds the profiles (age_bucket, country); without it they count as missing.
        """
        from cascade.data.features import user_state

        if users is None:
            users = pd.DataFrame({USER_ID: np.unique(interactions[USER_ID].to_numpy(np.int64))})
            users["age_bucket"], users["country"] = -1, None

        return cls(
            model=trained.model,
            item_ids=trained.item_ids,
            item_embeddings=trained.item_embeddings,
            users=user_table(users, user_state(interactions)),
            seen=UserItems.from_pairs(
                interactions[USER_ID].to_numpy(np.int64), interactions[ITEM_ID].to_numpy(np.int64)
            ),
            popular=PopularityRecommender(
                items=trained.popular_items, counts=trained.popular_counts
            ),
            item_bias=trained.item_bias,
            neighbour_term=trained.neighbour_term(),
        )

    def _positions(self, users: np.ndarray) -> np.ndarray:
        if len(self.user_ids) == 0:
            return np.full(len(users), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.user_ids, users), len(self.user_ids) - 1)
        return np.where(self.user_ids[pos] == users, pos, -1)

    def scores(self, rows: UserRows) -> np.ndarray:
        """``(n, n_items)`` float32 scores for tower inputs ``rows`` (nothing masked)."""
        with torch.inference_mode():
            scores = user_vectors(self.model, rows) @ self.item_emb_t
            if self.item_bias is not None:
                scores += self.item_bias
            if self.neighbour_term is not None:
                seen = np.asarray(rows.seen_items)
                for start in range(0, len(seen), 1024):  # bounds the term's (rows, items) buffers
                    part = torch.as_tensor(seen[start : start + 1024])
                    scores[start : start + 1024] += self.neighbour_term(part)
            out: np.ndarray = scores.numpy()
        return out

    def recommend(
        self, user_ids: np.ndarray, *, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per user: ``(item_ids int64 (n, k), scores float32 (n, k))``, padded -1/-inf."""
        users = check_request(user_ids, k, exclude)
        out_items = np.full((len(users), k), PAD_ITEM, dtype=np.int64)
        out_scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        pos = self._positions(users)
        known = np.flatnonzero(pos >= 0)
        if len(known):
            scores = self.scores(self.rows.take(pos[known]))
            self._mask(
                scores, users[known], None if exclude is None else [exclude[int(i)] for i in known]
            )
            idx, best = top_k(scores, k)
            out_items[known] = np.where(idx >= 0, self.item_ids[np.maximum(idx, 0)], PAD_ITEM)
            out_scores[known] = best
        cold = np.flatnonzero(pos < 0)
        if len(cold):
            ex = None if exclude is None else [exclude[int(i)] for i in cold]
            out_items[cold], out_scores[cold] = self.popular.recommend(users[cold], k=k, exclude=ex)
        return out_items, out_scores

    def _mask(
        self, scores: np.ndarray, users: np.ndarray, exclude: list[np.ndarray] | None
    ) -> None:
        rows, items = self.seen.rows(self.seen.positions(users))
        if exclude is not None:
            lengths = [len(e) for e in exclude]
            rows = np.concatenate([rows, np.repeat(np.arange(len(users)), lengths)])
            items = np.concatenate([items, *[np.asarray(e, np.int64) for e in exclude]])
        col = np.minimum(np.searchsorted(self.item_ids, items), len(self.item_ids) - 1)
        hit = self.item_ids[col] == items
        scores[rows[hit], col[hit]] = -np.inf


def load_two_tower(
    *, layout: Layout, dataset: ModelData, version: str | None = None
) -> TwoTowerRecommender:
    """The newest Two-Tower artifact trained on exactly ``dataset`` (data checksum and split), or
    the version folder named ``version`` when it was.

    Raises ``cascade.evaluation.model_data.ModelUnavailable`` (with the command to run) when none
    is, or saying what ``version`` was trained on when that is something else.
    """
    from cascade.data.dataset import read_dataset
    from cascade.evaluation.model_data import ModelUnavailable, version_candidates
    from two_tower.artifacts import (
        ArtifactError,
        latest_dir,
        list_versions,
        load_two_tower_artifact,
        read_metadata,
        root_dir,
    )

    latest: Path | None = None
    with contextlib.suppress(ArtifactError):  # no `latest` yet: newest first
        latest = latest_dir(layout.artifacts_dir)
    candidates = version_candidates(
        list_versions(layout.artifacts_dir),
        latest=latest,
        version=version,
        kind="Two-Tower",
        root=root_dir(layout.artifacts_dir),
    )
    for directory in candidates:
        try:
            meta: dict[str, Any] = read_metadata(directory)
        except ArtifactError as exc:
            if version is not None:
                raise ModelUnavailable(f"Two-Tower version {version}: {exc}") from exc
            logger.warning("skipping %s: %s", directory, exc)
            continue
        if version is not None and not dataset.matches(meta.get("data")):
            raise ModelUnavailable(
                f"Two-Tower version {version} cannot be used: {dataset.mismatch(meta.get('data'))}"
            )
        if dataset.matches(meta.get("data")):
            try:
                feature_settings.check(meta, what=f"Two-Tower artifact {directory.name}")
            except feature_settings.FeatureSettingsMismatch as exc:
                if version is not None:
                    raise ModelUnavailable(str(exc)) from exc
                logger.warning("skipping it: %s", exc)
                continue
            logger.info("two_tower: using artifact %s", directory)
            trained = load_two_tower_artifact(directory)
            if dataset.directory is None:
                raise ModelUnavailable(
                    "two_tower needs the data set's users table (no directory given)"
                )
            users = read_dataset(dataset.directory).users
            model = TwoTowerRecommender.from_trained(
                trained, interactions=dataset.train, users=users
            )
            share = (meta.get("training_set") or {}).get("empty_history_share")
            model.report_params = {
                "artifact": directory.name,
                "prior_beta": float((trained.metadata.get("prior") or {}).get("beta", 0.0)),
                "neighbour_gamma": trained.neighbour_gamma,
            }
            if isinstance(share, float):  # the evaluation's popularity-level warning says why
                model.report_params["empty_history_share"] = share
            return model
    flag = " --full-data" if dataset.split is None else ""
    raise ModelUnavailable(
        f"no Two-Tower artifact trained on {dataset.describe()} in {layout.artifacts_dir / 'two_tower'}; "
        f"run `cascade train two-tower --data {dataset.spec}{flag}`"
    )
