"""The model registry of evaluation and ``cascade recommend``: name -> a loaded Recommender.

Every model is judged on the same :class:`ModelData`: a data set (by checksum) and a split. A
model artifact is used only when it was trained on exactly that data and split; for the
evaluation the test interactions must not have been seen in training.

Adding a model: add a branch to :func:`load_model` that imports lazily and returns a
``Recommender`` (``cascade.recommenders``), raising :class:`ModelUnavailable` with a message
that says how to produce the artifact when there is none. ``two_tower`` is wired that way: it
calls ``two_tower.recommender.load_two_tower(layout=..., dataset=...)``. A model may carry
``report_params`` (a dict) that the evaluation report prints beside its metrics.

A ``version`` (the name of an artifact's version folder, e.g. ``20261204T135744Z``) picks that
artifact instead of the newest matching one; it must still match the data set and split, and a
mismatch is refused with what it was trained on.

``ease`` (:mod:`cascade.evaluation.ease`) has no artifact: it is fitted in memory on
``dataset.train`` each time, λ chosen on a hold-out of it split like ``dataset.split``; above
``ease.MAX_ITEMS`` items it is unavailable (too large), never an error.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from cascade.evaluation.model_data import ModelData, ModelUnavailable, version_candidates
from cascade.recommenders import PopularityRecommender, Recommender
from cascade.runtime.paths import Layout

logger = logging.getLogger(__name__)

MODEL_NAMES = ("popular", "als", "ease", "two_tower")
VERSIONED = ("als", "two_tower")  # the models with saved artifacts


def load_model(
    name: str,
    *,
    layout: Layout,
    dataset: ModelData,
    train_missing: bool = False,
    version: str | None = None,
) -> Recommender:
    """A ready Recommender for ``name`` trained on ``dataset``.

    ``train_missing``: for ``als``, train in memory (default parameters, not saved) when no
    saved artifact matches, instead of raising :class:`ModelUnavailable`. ``version``: that
    artifact version only (``als`` and ``two_tower``; ValueError for the others).
    """
    if version is not None and name not in VERSIONED:
        raise ValueError(f"{name} has no artifact versions; --version applies to als, two_tower")
    if name == "popular":
        return PopularityRecommender.from_interactions(dataset.train)
    if name == "als":
        return _load_als(
            layout=layout, dataset=dataset, train_missing=train_missing, version=version
        )
    if name == "ease":
        from cascade.evaluation.ease import fit_ease

        logger.info("EASE: fitting on %s", dataset.describe())
        return fit_ease(dataset.train, validation=dataset.split)
    if name == "two_tower":
        try:
            from two_tower.recommender import load_two_tower  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ModelUnavailable(f"two_tower cannot be loaded here ({exc})") from exc
        model: Recommender = load_two_tower(layout=layout, dataset=dataset, version=version)
        return model
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")


def _load_als(
    *, layout: Layout, dataset: ModelData, train_missing: bool, version: str | None = None
) -> Recommender:
    from fallback_mf.artifacts import (
        ArtifactError,
        als_root,
        latest_dir,
        list_versions,
        load_als,
        read_metadata,
    )

    latest: Path | None = None
    with contextlib.suppress(ArtifactError):  # no `latest` yet: newest first
        latest = latest_dir(layout.artifacts_dir)
    root = als_root(layout.artifacts_dir)
    candidates = version_candidates(
        list_versions(layout.artifacts_dir), latest=latest, version=version, kind="ALS", root=root
    )
    for directory in candidates:
        try:
            meta = read_metadata(directory)
        except ArtifactError as exc:
            if version is not None:
                raise ModelUnavailable(f"ALS version {version}: {exc}") from exc
            logger.warning("skipping %s: %s", directory, exc)
            continue
        if dataset.matches(meta.get("data")):
            logger.info("ALS: using artifact %s", directory)
            return load_als(directory)
        if version is not None:
            raise ModelUnavailable(
                f"ALS version {version} cannot be used: {dataset.mismatch(meta.get('data'))}"
            )
    if not train_missing:
        flag = " --full-data" if dataset.split is None else ""
        raise ModelUnavailable(
            f"no ALS artifact trained on {dataset.describe()} in {layout.artifacts_dir / 'als'}; "
            f"run `cascade train mf --data {dataset.spec}{flag}`"
        )
    from fallback_mf.train import train_als

    logger.info("ALS: no artifact trained on %s; training one in memory", dataset.describe())
    return train_als(interactions=dataset.train, progress=False)
