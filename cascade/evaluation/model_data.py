"""What a model is judged on (:class:`ModelData`) and how a missing one is reported.

Below both the model registry (``cascade.evaluation.models``) and the model packages that
register loaders into it, so neither has to import the other's floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cascade.evaluation.split import SplitParams
from cascade.runtime.paths import Layout


class ModelUnavailable(RuntimeError):
    """No artifact of this model matches the data set and split (the message says what to run)."""


@dataclass(frozen=True)
class ModelData:
    """What a model must have been trained on.

    ``train`` is the training side of ``split`` (or every interaction when ``split`` is None),
    ``checksum`` the data set's ``interactions_sha256`` from its manifest.
    """

    name: str
    spec: str
    checksum: str | None
    split: SplitParams | None
    train: pd.DataFrame
    directory: Path | None = None

    def data_metadata(self) -> dict[str, Any]:
        """The ``data`` block an artifact trained on this records in its metadata."""
        return {
            "dataset": self.name,
            "spec": self.spec,
            "checksum": self.checksum,
            "split": self.split.to_dict() if self.split is not None else None,
            "interactions": len(self.train),
        }

    def matches(self, data_meta: dict[str, Any] | None) -> bool:
        """True when an artifact's ``data`` block says it was trained on this data and split."""
        if not data_meta:
            return False
        want = self.data_metadata()
        return bool(
            data_meta.get("checksum") == want["checksum"]
            and data_meta.get("split") == want["split"]
        )

    def describe(self) -> str:
        split = "full data" if self.split is None else "train split"
        return f"{self.name} ({split}, checksum {str(self.checksum)[:12]})"

    def mismatch(self, data_meta: dict[str, Any] | None) -> str:
        """Why an artifact's ``data`` block does not match this data and split, in words."""
        if not data_meta:
            return "its metadata names no training data"
        theirs = "full data" if data_meta.get("split") is None else "train split"
        if data_meta.get("split") not in (None, self.data_metadata()["split"]):
            theirs = f"split {data_meta.get('split')}"
        return (
            f"it was trained on {data_meta.get('dataset', '?')} ({theirs}, checksum "
            f"{str(data_meta.get('checksum'))[:12]}), not on {self.describe()}"
        )


def version_candidates(
    candidates: list[Path], *, latest: Path | None, version: str | None, kind: str, root: Path
) -> list[Path]:
    """The version folders a loader tries, in order: only ``version`` when one is asked for
    (:class:`ModelUnavailable` listing the versions there when it is not one of them), else
    the one ``latest`` names, then the others newest first."""
    if version is None:
        return sorted(candidates, key=lambda p: p != latest)  # stable: newest first after latest
    named = [p for p in candidates if p.name == version]
    if not named:
        there = ", ".join(p.name for p in candidates) or "none"
        raise ModelUnavailable(f"no {kind} version {version!r} in {root}; versions there: {there}")
    return named


def prepare_data(
    *, layout: Layout, spec: str, split: SplitParams | None
) -> tuple[ModelData, pd.DataFrame]:
    """Resolve ``spec`` (``demo``, ``movielens:PATH``, ...), read it and split it.

    Returns the :class:`ModelData` (train side) and the test interactions (empty when ``split``
    is None). Errors from resolving or reading the data set propagate.
    """
    from cascade.data.dataset import read_dataset, read_manifest
    from cascade.data.resolve import resolve_dataset
    from cascade.evaluation.split import temporal_split

    directory = Path(resolve_dataset(spec, layout=layout))
    manifest = read_manifest(directory)
    interactions = read_dataset(directory).interactions
    if split is None:
        train, test = interactions, interactions.iloc[0:0]
    else:
        train, test = temporal_split(
            interactions, test_fraction=split.test_fraction, min_interactions=split.min_interactions
        )
    data = ModelData(
        name=directory.name,
        spec=spec,
        checksum=manifest.get("interactions_sha256"),
        split=split,
        train=train,
        directory=directory,
    )
    return data, test
