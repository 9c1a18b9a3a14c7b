"""The events contract: strict validation of every field, per-index errors, batch limits,
partitioning and the payload round trip."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from events import contract
from events.contract import (
    MAX_BATCH,
    BatchError,
    Event,
    ServedRecord,
    decode,
    decode_served,
    encode,
    encode_served,
    subject_for,
    validate_batch,
)

NOW = 1_800_000_000.0


def ok(**over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "user_id": 7,
        "item_id": 42,
        "type": "click",
        "timestamp": NOW - 1,
        "request_id": "req.1",
    }
    event.update(over)
    return {k: v for k, v in event.items() if v is not ...}


def errors_of(event: dict[str, Any]) -> list[dict[str, Any]]:
    return validate_batch([event], now=NOW)[1]


def test_a_valid_batch_validates() -> None:
    events, errors = validate_batch(
        [ok(), ok(event_id="e-2", type="rating", value=4.5), ok(event_id="e:3", request_id=...)],
        now=NOW,
    )
    assert errors == []
    assert [e.event_id for e in events] == ["e-1", "e-2", "e:3"]
    assert events[1].value == 4.5 and events[2].request_id is None


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"event_id": ""}, "event_id"),
        ({"event_id": "x" * 65}, "event_id"),
        ({"event_id": "a b"}, "event_id"),
        ({"event_id": "é"}, "event_id"),
        ({"event_id": 5}, "event_id"),
        ({"event_id": ...}, "event_id"),
        ({"user_id": -1}, "user_id"),
        ({"user_id": True}, "user_id"),
        ({"user_id": "7"}, "user_id"),
        ({"user_id": 1.5}, "user_id"),
        ({"user_id": 2**53}, "user_id"),
        ({"item_id": None}, "item_id"),
        ({"item_id": False}, "item_id"),
        ({"type": "like"}, "type"),
        ({"type": ...}, "type"),
        ({"timestamp": 0}, "timestamp"),
        ({"timestamp": -5.0}, "timestamp"),
        ({"timestamp": math.inf}, "timestamp"),
        ({"timestamp": math.nan}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"timestamp": "1700000000"}, "timestamp"),
        ({"timestamp": NOW + 301}, "timestamp"),
        ({"type": "rating"}, "value"),
        ({"type": "rating", "value": math.nan}, "value"),
        ({"type": "rating", "value": True}, "value"),
        ({"value": 3.0}, "value"),
        ({"request_id": "x" * 129}, "request_id"),
        ({"request_id": "a/b"}, "request_id"),
        ({"request_id": 12}, "request_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_each_bad_field_is_reported_by_name(over: dict[str, Any], field: str) -> None:
    errors = errors_of(ok(**over))
    assert len(errors) == 1
    assert errors[0]["index"] == 0 and errors[0]["field"] == field, errors
    assert errors[0]["reason"] and "Traceback" not in errors[0]["reason"]


def test_future_skew_is_configurable_and_integers_are_accepted() -> None:
    assert errors_of(ok(timestamp=NOW + 299)) == []
    assert errors_of(ok(timestamp=int(NOW))) == []
    _, errors = validate_batch([ok(timestamp=NOW + 10)], now=NOW, max_future_s=5)
    assert errors[0]["field"] == "timestamp" and "future" in errors[0]["reason"]
    assert validate_batch([ok(user_id=3.0)], now=NOW)[0][0].user_id == 3


def test_errors_name_each_bad_index_and_keep_the_good_events() -> None:
    raw = [ok(), "not an object", ok(event_id="e-3", user_id=-2), ok(event_id="e-4")]
    events, errors = validate_batch(raw, now=NOW)
    assert [e.event_id for e in events] == ["e-1", "e-4"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "event"), (2, "user_id")]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"events": []}, "array"),
        ([], "empty"),
        ([ok()] * (MAX_BATCH + 1), "at most"),
        (None, "array"),
    ],
)
def test_unusable_batches_raise_batch_error(raw: object, reason: str) -> None:
    with pytest.raises(BatchError) as info:
        validate_batch(raw, now=NOW)
    assert reason in info.value.reason


def test_a_full_batch_is_accepted() -> None:
    events, errors = validate_batch([ok(event_id=f"e{i}") for i in range(MAX_BATCH)], now=NOW)
    assert len(events) == MAX_BATCH and not errors


def test_consumption_rule() -> None:
    def event(kind: str, value: float | None = None) -> Event:
        return Event(event_id="e", user_id=1, item_id=1, type=kind, timestamp=NOW, value=value)  # type: ignore[arg-type]

    assert not event("impression").consumed
    assert all(event(k).consumed for k in ("click", "view", "purchase"))
    assert event("rating", contract.POSITIVE_RATING).consumed
    assert not event("rating", contract.POSITIVE_RATING - 0.5).consumed
    assert contract.is_consumption("rating", 5.0) and not contract.is_consumption(
        "impression", None
    )


def test_round_trip_and_poison_payloads() -> None:
    event = Event.model_validate(ok(type="rating", value=2.0))
    assert decode(encode(event)) == event
    assert b"null" not in encode(Event.model_validate(ok(request_id=...)))
    for bad in (b"{", b"[]", orjson.dumps({"event_id": "x"}), b"\xff"):
        with pytest.raises(ValueError):
            decode(bad)
    # the consumer decodes without a clock: an accepted event never fails on its timestamp later
    assert decode(encode(Event.model_validate(ok(timestamp=NOW + 10**6)))).timestamp > NOW


def test_served_record_round_trip() -> None:
    record = ServedRecord(
        request_id="r-1", user_id=3, tier="two_tower", model_version="v7", ts=NOW, item_ids=[1, 2]
    )
    assert decode_served(encode_served(record)) == record
    with pytest.raises(ValueError):
        decode_served(orjson.dumps({"request_id": "r", "user_id": 1}))


def test_a_user_always_maps_to_one_partition() -> None:
    assert subject_for(17, 16) == subject_for(17 + 16 * 5, 16) == "cascade.events.1"
    assert {subject_for(u, 16) for u in range(64)} == {f"cascade.events.{p}" for p in range(16)}


def test_partitions_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(contract.PARTITIONS_ENV, raising=False)
    assert contract.partitions_from_env() == contract.PARTITIONS
    monkeypatch.setenv(contract.PARTITIONS_ENV, "4")
    assert contract.partitions_from_env() == 4
    for bad in ("0", "x", "-3", "5000"):
        monkeypatch.setenv(contract.PARTITIONS_ENV, bad)
        with pytest.raises(ValueError):
            contract.partitions_from_env()
