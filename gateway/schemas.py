"""The gateway's public wire format, defined once here (its producer). Imports only pydantic.

``GET /v1/recommendations/{user_id}?k=20`` and ``POST /v1/recommendations`` (body
:class:`RecommendationRequest`) answer :class:`RecommendationResponse`, with the serving tier also
in the ``X-Served-By`` header and the request id in ``X-Request-ID``. Errors answer
:class:`ErrorResponse`. ``POST /v1/events`` answers :class:`EventsAccepted` (202) or, for bad
events, :class:`EventsRejected` (422, one entry per bad event).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, StringConstraints

RECOMMENDATIONS_PATH = "/v1/recommendations"
BATCH_PATH = "/v1/recommendations:batch"
EVENTS_PATH = "/v1/events"  # the body's events are defined by their producer, events.contract
SERVED_BY_HEADER = "X-Served-By"
REQUEST_ID_HEADER = "X-Request-ID"
FALLBACK_REASON_HEADER = "X-Fallback-Reason"

# User ids are the data set's own non-negative int64 ids.
MAX_USER_ID = 2**63 - 1
# Ids inside JSON bodies stay below 2**53: every JSON parser (JavaScript's too) reads them exactly,
# and a float-rounded id (9.223372036854776e18) cannot slip past a bound.
MAX_JSON_ID = 2**53 - 1


def _json_integer(value: object) -> object:
    """JSON Schema's ``integer``: a number without a fraction (``1``, ``1.0``), never ``true``
    or ``"1"``, which lax pydantic would read as 1 (issue 20). The int validation that follows
    refuses fractions."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer, not " + type(value).__name__)
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
PinnedVersion = Annotated[int, Field(ge=1, le=2**31 - 1), BeforeValidator(_json_integer)]
ItemId = Annotated[int, Field(ge=0, le=MAX_JSON_ID), BeforeValidator(_json_integer)]

# The category filter: names as the data set spells them (compared exactly), 1-64 characters
# without control characters or commas, at most MAX_FILTER_CATEGORIES per list. The same limits
# as the MF service's (fallback_mf.schemas) and the Triton contract's width (two_tower.contract);
# a test holds them equal.
MAX_FILTER_CATEGORIES = 20
MAX_CATEGORY_LENGTH = 64
CATEGORY_PATTERN = r"^[^\x00-\x1f\x7f,]+$"
CategoryName = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=MAX_CATEGORY_LENGTH, pattern=CATEGORY_PATTERN),
]
INCLUDE_DOC = (
    "only items of these categories (names as the data set spells them); "
    "absent or empty: every category"
)
EXCLUDE_DOC = "no item of these categories"


class Tier(StrEnum):
    """Which tier served a response."""

    TWO_TOWER = "two_tower"
    ALS = "als"
    POPULAR = "popular"


class FallbackReason(StrEnum):
    """Why a response was not served by the primary tier."""

    BREAKER_OPEN = "breaker_open"
    TIMEOUT = "timeout"
    ERROR = "error"
    FEATURES_UNAVAILABLE = "features_unavailable"
    COLD_START = "cold_start"


class RecommendationRequest(BaseModel):
    """Body of ``POST /v1/recommendations``."""

    model_config = ConfigDict(extra="forbid")

    user_id: JsonInt = Field(ge=0, le=MAX_JSON_ID, description="the data set's own user id")
    k: JsonInt = Field(20, ge=1, description="how many items; at most the gateway's max_k")
    exclude: list[ItemId] = Field(
        default_factory=list, description="item ids never to return (besides the user's history)"
    )
    model_version: PinnedVersion | None = Field(
        None, description="pin a Two-Tower version (keys with pin_version)"
    )
    include_categories: list[CategoryName] = Field(
        default_factory=list, max_length=MAX_FILTER_CATEGORIES, description=INCLUDE_DOC
    )
    exclude_categories: list[CategoryName] = Field(
        default_factory=list, max_length=MAX_FILTER_CATEGORIES, description=EXCLUDE_DOC
    )


class ScoredItem(BaseModel):
    """One recommended item (higher score is better; scores are comparable only within a tier)."""

    item_id: int = Field(ge=0, le=MAX_USER_ID)
    score: float = Field(allow_inf_nan=False, description="a finite number, never null")


class UnservableItems(ValueError):
    """Items that break the response model: a bug upstream of the response (answered 500)."""


def check_items(item_ids: Sequence[int], scores: Sequence[float]) -> None:
    """What the response model requires of the items, checked in plain Python (the hot path):
    ids integers in [0, MAX_USER_ID], scores finite numbers, as many scores as ids."""
    if len(item_ids) != len(scores):
        raise UnservableItems(f"{len(item_ids)} item ids but {len(scores)} scores")
    for item in item_ids:
        if type(item) is not int or not 0 <= item <= MAX_USER_ID:
            raise UnservableItems(f"item id {item!r} out of range")
    for score in scores:
        if type(score) is not float or not math.isfinite(score):
            raise UnservableItems(f"score {score!r} is not a finite float")


class RecommendationResponse(BaseModel):
    """Exactly k unique items the user has not interacted with (inside the category filter,
    when one is given), best first; fewer only when no more such items exist."""

    user_id: int
    items: list[ScoredItem]
    served_by: Tier
    fallback_reason: FallbackReason | None = Field(
        description="null when the primary (two_tower) served the request"
    )
    model_version: str
    request_id: str


class BatchEntry(BaseModel):
    """One user of ``POST /v1/recommendations:batch``: the single-user body without
    ``model_version`` (a batch is routed by the rollout like any request, never pinned)."""

    model_config = ConfigDict(extra="forbid")

    user_id: JsonInt = Field(ge=0, le=MAX_JSON_ID, description="the data set's own user id")
    k: JsonInt | None = Field(
        None, ge=1, description="how many items; absent: the batch's k (at most max_k)"
    )
    exclude: list[ItemId] = Field(
        default_factory=list, description="item ids never to return (besides the user's history)"
    )
    include_categories: list[CategoryName] = Field(
        default_factory=list, max_length=MAX_FILTER_CATEGORIES, description=INCLUDE_DOC
    )
    exclude_categories: list[CategoryName] = Field(
        default_factory=list, max_length=MAX_FILTER_CATEGORIES, description=EXCLUDE_DOC
    )


class BatchRecommendationRequest(BaseModel):
    """Body of ``POST /v1/recommendations:batch``: 1 to max users, each answered separately."""

    model_config = ConfigDict(extra="forbid")

    k: JsonInt | None = Field(
        None, ge=1, description="k of every entry that names none (absent: the default k)"
    )
    users: list[BatchEntry] = Field(
        min_length=1, description="the users, answered in this order (a user may repeat)"
    )


class BatchResult(BaseModel):
    """One user's answer in a batch: what the single-user route answers, with its own
    ``request_id`` (``<batch request id>-<index>``), which that user's events carry."""

    user_id: int
    items: list[ScoredItem]
    served_by: Tier
    fallback_reason: FallbackReason | None = Field(
        description="null when the primary (two_tower) served this user"
    )
    model_version: str
    request_id: str


class BatchRecommendationResponse(BaseModel):
    """One result per entry of the request, in its order."""

    results: list[BatchResult]
    request_id: str


class ErrorResponse(BaseModel):
    """A domain error: a stable machine-readable ``code`` and a human-readable ``detail``."""

    code: str
    detail: str
    request_id: str | None = None


class HealthResponse(BaseModel):
    """``/healthz`` and ``/readyz``: status plus what each check found."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class EventsAccepted(BaseModel):
    """``POST /v1/events``: every event of the batch is stored in the event log."""

    accepted: int = Field(ge=1, description="events stored (the whole batch)")
    request_id: str


class EventError(BaseModel):
    """Why one event of a batch was refused (the first problem found in it)."""

    index: int = Field(ge=0, description="position of the event in the batch")
    field: str = Field(description="the offending field (`event` for the event as a whole)")
    reason: str


class EventsRejected(ErrorResponse):
    """``POST /v1/events`` refused the whole batch (nothing was stored): ``errors`` lists each bad
    event by index; empty when the batch itself is unusable (not a list, empty, too long)."""

    errors: list[EventError] = Field(default_factory=list)
