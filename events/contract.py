"""The events wire format and log layout, defined once here (their producer). Imports only
pydantic and orjson (and the gateway's id rules), so the gateway can import it.

- :class:`Event`: one user event, validated strictly (extra fields refused, no ``true`` for a
  number, no ``"1"`` for an id). :func:`validate_batch` checks a batch of 1..``MAX_BATCH`` raw
  events and reports each bad one by index, so ``POST /v1/events`` can answer one 422.
- The log: one JetStream stream ``STREAM`` over ``SUBJECT_PREFIX.<partition>``; a user's events
  all go to one partition (:func:`subject_for`), so per-user order holds on the log. Served
  answers (:class:`ServedRecord`, for the CTR join) go to ``SERVED_SUBJECT_PREFIX.<partition>``
  on the stream ``SERVED_STREAM``.
- Which events enter a user's history (``CONSUMPTION_TYPES``): click, view, purchase, and a
  rating of at least ``POSITIVE_RATING``. An impression never does (being shown an item is not
  consuming it); a low rating is logged but is not history either.
- Trace context travels in the message headers (``traceparent``, ``tracestate``), never in the
  payload.
"""

from __future__ import annotations

import math
import os
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from gateway.schemas import MAX_JSON_ID, JsonInt

EVENT_TYPES = ("impression", "click", "view", "purchase", "rating")
EventType = Literal["impression", "click", "view", "purchase", "rating"]
POSITIVE_RATING = 4.0  # a rating at or above this is a consumption (enters the history)
CONSUMPTION_TYPES = frozenset({"click", "view", "purchase", "rating"})  # rating: value-gated
CTR_TYPES = frozenset({"impression", "click"})  # what the served-answer join counts

MAX_BATCH = 500
MAX_FUTURE_SKEW_S = 300.0  # an event stamped further in the future is refused
EVENT_ID_PATTERN = r"[A-Za-z0-9._:-]{1,64}"
REQUEST_ID_PATTERN = r"[A-Za-z0-9._:-]{1,128}"
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)

STREAM = "CASCADE_EVENTS"
SUBJECT_PREFIX = "cascade.events"
SERVED_STREAM = "CASCADE_SERVED"
SERVED_SUBJECT_PREFIX = "cascade.served"
PARTITIONS = 16
PARTITIONS_ENV = "EVENTS_PARTITIONS"
MAX_PARTITIONS = 1024
# The offline log: parquet files under <data set folder>/EVENTS_DIR/date=YYYY-MM-DD/ (the event's
# UTC date), part-<consumer>-<first stream seq>-<last stream seq>.parquet, columns OFFLINE_COLUMNS
# (timestamp: timestamp[us, UTC]; value, request_id nullable). Written by the consumer, read by
# cascade.data.event_log (which drops repeats of an event_id: redelivery can write one twice).
EVENTS_DIR = "events"
OFFLINE_COLUMNS = (
    "event_id",
    "user_id",
    "item_id",
    "type",
    "value",
    "timestamp",
    "request_id",
    "stream_seq",
)
MSG_ID_HEADER = "Nats-Msg-Id"  # JetStream's per-message dedup key
TRACE_HEADERS = ("traceparent", "tracestate")


class BatchError(ValueError):
    """The batch as a whole is unusable (not a list, empty, too long); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _number(value: object) -> object:
    """A JSON number (int or float), never ``true`` or ``"1.5"``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number, not " + type(value).__name__)
    return value


def _text(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: object) -> object:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {type(value).__name__}")
        if not pattern.fullmatch(value):
            raise ValueError(f"{what} must match {pattern.pattern}")
        return value

    return BeforeValidator(check)


Number = Annotated[float, BeforeValidator(_number)]
Id = Annotated[JsonInt, Field(ge=0, le=MAX_JSON_ID)]


class Event(BaseModel):
    """One user event. ``timestamp`` is when it happened (epoch seconds, UTC), not when it was
    sent; ``value`` is the rating (required for ``rating``, refused otherwise);
    ``request_id`` names the recommendation that showed the item (the CTR join)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Annotated[str, _text(_EVENT_ID, "event_id")]
    user_id: Id
    item_id: Id
    type: EventType
    timestamp: Annotated[Number, Field(gt=0, allow_inf_nan=False)]
    value: Annotated[Number, Field(allow_inf_nan=False)] | None = Field(
        default=None, validate_default=True
    )
    request_id: Annotated[str, _text(_REQUEST_ID, "request_id")] | None = None

    @field_validator("timestamp")
    @classmethod
    def _not_in_the_future(cls, ts: float, info: ValidationInfo) -> float:
        # Only checked where a clock is given (the gateway's validation), not when the consumer
        # decodes an event that was accepted earlier.
        ctx = info.context or {}
        now = ctx.get("now")
        if now is not None:
            skew = float(ctx.get("max_future_s", MAX_FUTURE_SKEW_S))
            if ts > now + skew:
                raise ValueError(f"is more than {skew:g} s in the future")
        return ts

    @field_validator("value")
    @classmethod
    def _value_iff_rating(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("type")
        if kind == "rating" and value is None:
            raise ValueError("is required for a rating")
        if kind is not None and kind != "rating" and value is not None:
            raise ValueError(f"is only for ratings, not {kind}")
        return value

    @property
    def consumed(self) -> bool:
        """True when the event enters the user's history (see the module docstring)."""
        if self.type == "rating":
            return self.value is not None and self.value >= POSITIVE_RATING
        return self.type in CONSUMPTION_TYPES


def is_consumption(kind: str, value: float | None) -> bool:
    """``Event.consumed`` for a type and value (the offline reader's rule, the same one)."""
    if kind == "rating":
        return value is not None and math.isfinite(value) and value >= POSITIVE_RATING
    return kind in CONSUMPTION_TYPES


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "event"


def validate_batch(
    raw: object, *, now: float, max_future_s: float = MAX_FUTURE_SKEW_S
) -> tuple[list[Event], list[dict[str, Any]]]:
    """The valid events of ``raw`` (a parsed JSON array) and one error per bad event:
    ``{"index": i, "field": "timestamp", "reason": "..."}`` (the first problem of each event).
    Raises :class:`BatchError` when ``raw`` is not a list of 1..``MAX_BATCH`` items."""
    if not isinstance(raw, list):
        raise BatchError(f"expected a JSON array of events, got {type(raw).__name__}")
    if not raw:
        raise BatchError("the batch is empty")
    if len(raw) > MAX_BATCH:
        raise BatchError(f"{len(raw)} events in one batch; at most {MAX_BATCH}")
    context = {"now": now, "max_future_s": max_future_s}
    events: list[Event] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        try:
            events.append(Event.model_validate(item, context=context))
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            reason = str(first["msg"]).removeprefix("Value error, ")
            errors.append({"index": i, "field": _field(tuple(first["loc"])), "reason": reason})
    return events, errors


def partitions_from_env() -> int:
    """``EVENTS_PARTITIONS`` (default ``PARTITIONS``), 1..``MAX_PARTITIONS``."""
    raw = os.environ.get(PARTITIONS_ENV, "")
    if not raw:
        return PARTITIONS
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PARTITIONS:
        raise ValueError(f"{PARTITIONS_ENV}={raw!r}: expected an integer 1..{MAX_PARTITIONS}")
    return int(raw)


def partition_of(user_id: int, partitions: int) -> int:
    """The partition of a user: every event of one user lands on the same subject."""
    return user_id % partitions


def subject_for(user_id: int, partitions: int) -> str:
    """The subject a user's events are published on (``cascade.events.<partition>``)."""
    return f"{SUBJECT_PREFIX}.{partition_of(user_id, partitions)}"


def served_subject_for(user_id: int, partitions: int) -> str:
    """The subject a served answer of this user is published on."""
    return f"{SERVED_SUBJECT_PREFIX}.{partition_of(user_id, partitions)}"


def encode(event: Event) -> bytes:
    """The message payload of ``event`` (compact JSON, ``None`` fields left out)."""
    return orjson.dumps(event.model_dump(exclude_none=True))


def decode(data: bytes) -> Event:
    """The event in a message payload; ``ValueError`` (a pydantic ``ValidationError`` or
    ``orjson.JSONDecodeError``) when it is not one: a poison message."""
    return Event.model_validate(orjson.loads(data))


class ServedRecord(BaseModel):
    """One recommendation answer as served: which tier and model version showed which items.
    The gateway publishes one per answer; the consumer joins impressions and clicks to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Annotated[str, _text(_REQUEST_ID, "request_id")]
    user_id: Id
    tier: Annotated[str, Field(min_length=1, max_length=64)]
    model_version: Annotated[str, Field(min_length=1, max_length=128)]
    ts: Annotated[Number, Field(gt=0, allow_inf_nan=False)]
    item_ids: list[Id] = Field(default_factory=list, max_length=1000)


def encode_served(record: ServedRecord) -> bytes:
    """The message payload of a served record."""
    return orjson.dumps(record.model_dump())


def decode_served(data: bytes) -> ServedRecord:
    """The served record in a payload; ``ValueError`` when it is not one."""
    return ServedRecord.model_validate(orjson.loads(data))
