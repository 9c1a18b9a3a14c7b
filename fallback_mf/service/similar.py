"""``GET /v1/items/{item_id}/similar?k=20``: the items nearest to an item by ALS item factors.

Cosine over the item factors of the model being served (:func:`similar_one`), best first,
never the item itself; 404 ``unknown_item`` for an item the model does not know; 422 for k out of
``[1, MF_MAX_K]``. The gateway calls it as the fallback of its similar-items endpoint.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Path, Query, Response

from fallback_mf.schemas import MODEL_VERSION_HEADER, ErrorResponse
from fallback_mf.service.deps import SettingsDep, StoreDep
from fallback_mf.service.errors import InvalidRequest, MfServiceError
from fallback_mf.service.scoring import AlsScorer
from fallback_mf.similar_schemas import SIMILAR_PATH, UNKNOWN_ITEM_CODE, SimilarItemsResponse

INT64_MAX = 2**63 - 1
router = APIRouter()


class UnknownItem(MfServiceError):
    """The served model has no factors for the item."""

    status_code = 404
    code = UNKNOWN_ITEM_CODE


# Each loaded model's item factor norms, computed on its first similar-items request and
# dropped with the model (a reload swaps in a new scorer).
_NORMS: weakref.WeakKeyDictionary[AlsScorer, np.ndarray] = weakref.WeakKeyDictionary()


def similar_one(scorer: AlsScorer, item_id: int, *, k: int) -> tuple[list[int], list[float]] | None:
    """Up to ``k`` item ids nearest to ``item_id`` by the cosine of the item factors, best first,
    never ``item_id`` itself; None when the model does not know ``item_id``. An item whose
    factors are all zero has cosine 0 with everything (no division by zero)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    pos = int(scorer.item_positions(np.array([item_id], dtype=np.int64))[0])
    if pos < 0:
        return None
    factors = scorer.item_factors_t  # (factors, n_items)
    norms = _NORMS.get(scorer)
    if norms is None:
        norms = np.linalg.norm(factors, axis=0).astype(np.float32)
        _NORMS[scorer] = norms
    dots = factors[:, pos] @ factors
    denom = norms * norms[pos]
    scores = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
    scores[pos] = -np.inf
    n = len(scores)
    cand = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    cand = cand[np.isfinite(scores[cand])]
    return scorer.item_ids[cand].tolist(), np.clip(scores[cand], -1.0, 1.0).tolist()


@router.get(
    SIMILAR_PATH,
    response_model=SimilarItemsResponse,
    responses={
        404: {"model": ErrorResponse, "description": "the model does not know the item"},
        422: {"description": "malformed item id or k out of range"},
        503: {"model": ErrorResponse, "description": "no model loaded yet"},
    },
    tags=["recommendations"],
)
async def similar_items(
    item_id: Annotated[int, Path(ge=0, le=INT64_MAX, description="the data set's own item id")],
    store: StoreDep,
    settings: SettingsDep,
    k: Annotated[
        int | None, Query(ge=1, description="items to return (default MF_DEFAULT_K)")
    ] = None,
) -> Response:
    """The ``k`` items most similar to ``item_id`` (cosine of ALS item factors), best first."""
    k = settings.default_k if k is None else k
    if k > settings.max_k:
        raise InvalidRequest(f"k must be between 1 and {settings.max_k}, got {k}")
    loaded = store.current  # read the reference once: a concurrent reload cannot mix models
    model = loaded.model
    if model.n_items <= settings.inline_max_items:  # as recommendations: small ones inline
        found = similar_one(model, item_id, k=k)
    else:
        found = await asyncio.to_thread(similar_one, model, item_id, k=k)
    if found is None:
        raise UnknownItem(f"item {item_id} is unknown to ALS model {loaded.version}")
    items, scores = found
    body = {
        "item_id": item_id,
        "items": [{"item_id": i, "score": s} for i, s in zip(items, scores, strict=True)],
        "model_version": loaded.version,
    }
    return Response(
        content=orjson.dumps(body),
        media_type="application/json",
        headers={MODEL_VERSION_HEADER: loaded.version},
    )
