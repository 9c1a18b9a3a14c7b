"""The MF service's wire format, defined once here (its producer). Imports only pydantic.

``GET /v1/recommendations/{user_id}?k=20&exclude=3,17`` answers :class:`RecommendationResponse`;
``include_categories`` / ``exclude_categories`` (repeated query parameters, category names of
:data:`CATEGORY_PATTERN`, at most :data:`MAX_FILTER_CATEGORIES` each) filter it inside the
top-k. An artifact without item categories answers a filtered request 409
``categories_unavailable``.
``POST /admin/reload`` (internal) answers :class:`ReloadResponse`. Errors answer
:class:`ErrorResponse` (domain errors) or FastAPI's ``{"detail": [...]}`` (request validation, 422).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictInt

# Item ids are the data set's own non-negative int64 ids.
MAX_ITEM_ID = 2**63 - 1

# The category filter: names as the data set spells them (1-64 characters, no control
# character, no comma), at most this many per list. The gateway's limits are the same
# (gateway.schemas; a test holds them equal).
MAX_FILTER_CATEGORIES = 20
MAX_CATEGORY_LENGTH = 64
CATEGORY_PATTERN = r"^[^\x00-\x1f\x7f,]+$"

RECOMMENDATIONS_PATH = "/v1/recommendations/{user_id}"
RELOAD_PATH = "/admin/reload"
MODEL_VERSION_HEADER = "X-Model-Version"


class ScoredItem(BaseModel):
    """One recommended item: the data set's own item id and the model's score (higher is better)."""

    item_id: StrictInt = Field(ge=0, le=MAX_ITEM_ID)
    score: float = Field(strict=True, allow_inf_nan=False, description="finite")


class RecommendationResponse(BaseModel):
    """Top-k items for one user, best first.

    ``known_user`` is false when the model never saw the user in training: ``items`` are then the
    most popular items (minus ``exclude``), scored by their interaction counts.
    """

    user_id: int
    items: list[ScoredItem]
    model_version: str
    known_user: bool


class ReloadRequest(BaseModel):
    """Body of ``POST /admin/reload``; no body (or no version) means: follow ``latest``."""

    version: str | None = Field(default=None, description="version folder to load")


class ReloadResponse(BaseModel):
    """What a reload did: the version served before and after, and whether it changed."""

    previous_version: str
    model_version: str
    reloaded: bool


class ErrorResponse(BaseModel):
    """A domain error: a stable machine-readable ``code`` and a human-readable ``detail``."""

    code: str
    detail: str
