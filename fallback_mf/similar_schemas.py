"""Wire format of the MF service's similar-items endpoint, defined once here (its producer).
Imports only pydantic and :mod:`fallback_mf.schemas`.

``GET /v1/items/{item_id}/similar?k=20`` answers :class:`SimilarItemsResponse`; an item the
served model does not know answers 404 with ``fallback_mf.schemas.ErrorResponse`` and code
:data:`UNKNOWN_ITEM_CODE`.
"""

from __future__ import annotations

from pydantic import BaseModel

from fallback_mf.schemas import ScoredItem

SIMILAR_PATH = "/v1/items/{item_id}/similar"
UNKNOWN_ITEM_CODE = "unknown_item"


class SimilarItemsResponse(BaseModel):
    """The k items nearest to ``item_id`` by the cosine of their ALS item factors (a score in
    [-1, 1]), best first, never ``item_id`` itself; fewer than k only when the catalogue has
    fewer other items."""

    item_id: int
    items: list[ScoredItem]
    model_version: str
