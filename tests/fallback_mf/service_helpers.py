"""Shared by the MF service tests: a tiny hand-made ALS model, fake artifact folders, and a
synchronous in-process client that runs the app's lifespan."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from fastapi import FastAPI

from cascade.recommenders import PopularityRecommender, UserItems
from fallback_mf.artifacts import arrays_of
from fallback_mf.model import AlsModel
from fallback_mf.service.scoring import AlsScorer
from fallback_mf.service.settings import MfSettings

N_USERS, N_ITEMS, FACTORS = 12, 40, 8


def tiny_model(seed: int = 0, *, user_offset: int = 100, item_offset: int = 1000) -> AlsModel:
    """A hand-made ALS model: original ids are offset so row indices never pass for ids."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(N_USERS), 5) + user_offset
    items = rng.integers(0, N_ITEMS, size=len(users)) + item_offset
    frame = pd.DataFrame({"user_id": users, "item_id": items})
    user_ids = np.arange(N_USERS, dtype=np.int64) + user_offset
    item_ids = np.arange(N_ITEMS, dtype=np.int64) + item_offset
    seen = UserItems.from_pairs(users - user_offset, items - item_offset)  # rows = indices
    assert np.array_equal(seen.user_ids, np.arange(N_USERS))
    seen = UserItems(user_ids=user_ids, indptr=seen.indptr, indices=seen.indices)
    return AlsModel(
        user_factors=rng.standard_normal((N_USERS, FACTORS)).astype(np.float32),
        item_factors=rng.standard_normal((N_ITEMS, FACTORS)).astype(np.float32),
        user_ids=user_ids,
        item_ids=item_ids,
        seen=seen,
        popular=PopularityRecommender.from_interactions(frame, with_seen=False),
    )


def scorer_of(model: AlsModel) -> AlsScorer:
    """What the service's loader would build from ``model`` saved as an artifact."""
    return AlsScorer.from_arrays(arrays_of(model))


class FakeArtifacts:
    """Stands in for the artifact folders: version name -> model (seed), counts loads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loads: list[str] = []

    def publish(self, version: str) -> None:
        (self.root / version).mkdir(parents=True, exist_ok=True)
        (self.root / "latest").write_text(version + "\n")

    def __call__(self, directory: Path) -> AlsScorer:
        if not directory.is_dir():
            raise FileNotFoundError(f"no artifact at {directory}")
        self.loads.append(directory.name)
        return scorer_of(tiny_model(seed=int(directory.name.removeprefix("v"))))


def settings_for(artifacts: FakeArtifacts, **overrides: object) -> MfSettings:
    overrides.setdefault("reload_min_interval_s", 0)  # tests reload back to back
    return MfSettings(artifacts_dir=artifacts.root, reload_interval_s=0, **overrides)


class AppClient:
    """A synchronous client over httpx's ASGITransport that also runs the app's lifespan.

    (Starlette's own AppClient warns about httpx, and warnings are errors here.)
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._lifespan = app.router.lifespan_context(app)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mf")

    def __enter__(self) -> AppClient:
        try:
            self.loop.run_until_complete(self._lifespan.__aenter__())
        except BaseException:
            self.loop.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self.loop.close()

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return self.loop.run_until_complete(self.http.get(url, **kwargs))

    def post(self, url: str, **kwargs: object) -> httpx.Response:
        return self.loop.run_until_complete(self.http.post(url, **kwargs))

    def sleep(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))
