"""The model registry of evaluation and ``cascade recommend``: name -> a loaded Recommender.

Every model is judged on the same :class:`ModelData`: a data set (by checksum) and a split. A
model artifact is used only when it was trained on exactly that data and split; for the
evaluation the test interactions must not have been seen in training.

Adding a model: add a branch to :func:`load_model` that imports lazily and returns a
``Recommender`` (``cascade.recommenders``), raising :class:`ModelUnavailable` with a message
that says how to produce the artifact when there is none. ``two_tower`` is wired that way: it
calls ``two_tower.recommender.load_two_tower(layout=..., dataset=...)``. A model may carry
``report_params`` (a dict) that the evaluation report prints beside its metrics.

``ease`` (:mod:`cascade.evaluation.ease`) has no artifact: it is fitted in memory on
``dataset.train`` each time, λ chosen on a hold-out of it split like ``dataset.split``; above
``ease.MAX_ITEMS`` items it is unavailable (too large), never an error.
"""

from __future__ import annotations

import logging

from cascade.evaluation.model_data import ModelData, ModelUnavailable
from cascade.recommenders import PopularityRecommender, Recommender
from cascade.runtime.paths import Layout

logger = logging.getLogger(__name__)

MODEL_NAMES = ("popular", "als", "ease", "two_tower")


def load_model(
    name: str, *, layout: Layout, dataset: ModelData, train_missing: bool = False
) -> Recommender:
    """A ready Recommender for ``name`` trained on ``dataset``.

    ``train_missing``: for ``als``, train in memory (default parameters, not saved) when no
    saved artifact matches, instead of raising :class:`ModelUnavailable`.
    """
    if name == "popular":
        return PopularityRecommender.from_interactions(dataset.train)
    if name == "als":
        return _load_als(layout=layout, dataset=dataset, train_missing=train_missing)
    if name == "ease":
        from cascade.evaluation.ease import fit_ease

        logger.info("EASE: fitting on %s", dataset.describe())
        return fit_ease(dataset.train, validation=dataset.split)
    if name == "two_tower":
        try:
            from two_tower.recommender import load_two_tower  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ModelUnavailable(f"two_tower cannot be loaded here ({exc})") from exc
        model: Recommender = load_two_tower(layout=layout, dataset=dataset)
        return model
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")


def _load_als(*, layout: Layout, dataset: ModelData, train_missing: bool) -> Recommender:
    from fallback_mf.artifacts import (
        ArtifactError,
        latest_dir,
        list_versions,
        load_als,
        read_metadata,
    )

    candidates = list_versions(layout.artifacts_dir)
    try:
        latest = latest_dir(layout.artifacts_dir)
        candidates.sort(key=lambda p: p != latest)  # prefer what `latest` names, then newest
    except ArtifactError:
        pass
    for directory in candidates:
        try:
            meta = read_metadata(directory)
        except ArtifactError as exc:
            logger.warning("skipping %s: %s", directory, exc)
            continue
        if dataset.matches(meta.get("data")):
            logger.info("ALS: using artifact %s", directory)
            return load_als(directory)
    if not train_missing:
        flag = " --full-data" if dataset.split is None else ""
        raise ModelUnavailable(
            f"no ALS artifact trained on {dataset.describe()} in {layout.artifacts_dir / 'als'}; "
            f"run `cascade train mf --data {dataset.spec}{flag}`"
        )
    from fallback_mf.train import train_als

    logger.info("ALS: no artifact trained on %s; training one in memory", dataset.describe())
    return train_als(interactions=dataset.train, progress=False)
