"""The offline gate of ``cascade rollout start``: is the candidate's offline evaluation as good
as the stable version's, on the same data set and split?

Each Triton version folder's ``metadata.json`` (written by ``cascade export two-tower``) holds
the ``metrics`` the training run measured on its holdout (the same code as ``cascade evaluate``:
``two_tower.validation.holdout_metrics``) and the ``artifact_version`` it came from; that
artifact's own ``metadata.json`` names the ``data`` (data set checksum and split). Two versions
are comparable only when both name the same checksum and split: a Recall@20 on another holdout
says nothing about this one. The figure compared is ``metrics.two_tower.<metric>`` (default
``recall@20``); the candidate fails when it is lower than stable's by more than ``max_drop``
(relative).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_KEY = "two_tower"


class GateError(RuntimeError):
    """The gate cannot judge (a version or its metrics are missing): refuse unless forced."""


@dataclass(frozen=True)
class GateResult:
    passed: bool
    metric: str
    stable: float
    candidate: float
    relative_drop: float  # (stable - candidate) / stable; negative: the candidate is better
    max_drop: float
    message: str


def version_metadata(repository: Path, model: str, version: int) -> dict[str, Any]:
    """``<repository>/<model>/<version>/metadata.json``; GateError when missing or unreadable."""
    path = repository / model / str(version) / "metadata.json"
    if not path.is_file():
        raise GateError(f"version {version} is not in the model repository ({path} missing)")
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GateError(f"{path} is not readable JSON: {exc}") from exc
    return meta


def _data_block(meta: dict[str, Any], artifacts_dir: Path | None) -> dict[str, Any] | None:
    if isinstance(meta.get("data"), dict):
        return dict(meta["data"])
    artifact = meta.get("artifact_version")
    if artifacts_dir is None or not artifact:
        return None
    path = artifacts_dir / MODEL_KEY / str(artifact) / "metadata.json"
    try:
        data = json.loads(path.read_text()).get("data")
    except (OSError, ValueError):
        return None
    return dict(data) if isinstance(data, dict) else None


def _figure(meta: dict[str, Any], metric: str, version: int) -> float:
    try:
        return float(meta["metrics"][MODEL_KEY][metric])
    except (KeyError, TypeError, ValueError) as exc:
        raise GateError(
            f"version {version} records no offline {metric} (metrics.{MODEL_KEY}.{metric} in its "
            "metadata.json: train with a holdout split, then export)"
        ) from exc


def offline_gate(
    *,
    repository: Path,
    stable: int,
    candidate: int,
    max_drop: float,
    metric: str = "recall@20",
    artifacts_dir: Path | None = None,
    model: str = MODEL_KEY,
) -> GateResult:
    """Compare the two versions' offline ``metric``; GateError when they cannot be compared."""
    metas = {v: version_metadata(repository, model, v) for v in (stable, candidate)}
    # Figures first: a version with none (trained on the full data, as `cascade up` does) is
    # told so, rather than blamed for a split that differs only because it has none.
    s, c = _figure(metas[stable], metric, stable), _figure(metas[candidate], metric, candidate)
    datas = {v: _data_block(metas[v], artifacts_dir) for v in (stable, candidate)}
    for v, data in datas.items():
        if data is None:
            raise GateError(f"version {v}: its training data set and split are not recorded")
    a, b = datas[stable], datas[candidate]
    assert a is not None and b is not None
    if (a.get("checksum"), a.get("split")) != (b.get("checksum"), b.get("split")):
        raise GateError(
            f"versions {stable} and {candidate} were evaluated on different data "
            f"({a.get('dataset')} {str(a.get('checksum'))[:12]} split {a.get('split')} vs "
            f"{b.get('dataset')} {str(b.get('checksum'))[:12]} split {b.get('split')}): not comparable"
        )
    drop = (s - c) / s if s > 0 else 0.0
    passed = drop <= max_drop
    verb = "passes" if passed else "fails"
    message = (
        f"offline gate {verb}: {metric} candidate v{candidate} {c:.4f} vs stable v{stable} "
        f"{s:.4f} ({-drop:+.1%} relative; allowed drop {max_drop:.1%})"
    )
    return GateResult(passed, metric, s, c, drop, max_drop, message)
