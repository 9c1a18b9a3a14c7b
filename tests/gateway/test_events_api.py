"""``POST /v1/events`` against a real ``nats-server -js`` (its own store, a free port; never the
machine's :4222), with the in-process fake recommenders of fakes.py: 202 only after JetStream
acked every event, 422 by index, 503 while the broker is down and 202 again after it restarts,
auth and limits, served records for the CTR join, readiness and metrics.

The stream is created here with ``EventLog.ensure_stream``, as the consumer does in production
(it owns the stream's configuration; the gateway only publishes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats.js.errors
import pytest

from events.contract import MAX_BATCH, STREAM, decode, decode_served
from events.log import EventLog
from events.natsd import NatsServer
from gateway.edge import keys
from gateway.main import create_app
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import Fakes
from tests.gateway.test_api import make_settings

pytestmark = pytest.mark.integration

URL = "/v1/events"


def event(i: int, **over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": f"e-{i}",
        "user_id": 7,
        "item_id": i,
        "type": "click",
        "timestamp": time.time() - 1,
    }
    base.update(over)
    return base


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("nats")
    server = NatsServer(root / "js", log_path=root / "nats.log").start()
    try:
        yield server
    finally:
        server.stop()


async def _admin(url: str, action: Callable[[EventLog], object]) -> object:
    log = EventLog(partitions=4)
    await log.connect(url, timeout_s=2)
    try:
        result = action(log)
        if asyncio.iscoroutine(result):
            result = await result
        return result
    finally:
        await log.close()


def fresh_stream(url: str) -> None:
    """An empty events stream (and served stream) for each test."""

    async def reset(log: EventLog) -> None:
        for name in (STREAM, "CASCADE_SERVED"):
            with contextlib.suppress(nats.js.errors.NotFoundError):  # absent on the first run
                await log.jetstream.delete_stream(name)
        await log.ensure_stream()

    asyncio.run(_admin(url, reset))  # type: ignore[arg-type]


def stored(url: str, subject: str = "cascade.events.>", n: int | None = None) -> list:
    """Every message on ``subject`` as (data, headers)."""

    async def read(log: EventLog) -> list:
        name = STREAM if subject.startswith("cascade.events") else "CASCADE_SERVED"
        info = await log.jetstream.stream_info(name)
        want = info.state.messages if n is None else n
        out: list = []
        if not want:
            return out
        sub = await log.jetstream.pull_subscribe(subject, durable=None)
        deadline = time.monotonic() + 5
        while len(out) < want and time.monotonic() < deadline:
            try:
                for msg in await sub.fetch(want - len(out), timeout=1):
                    out.append((msg.data, dict(msg.headers or {})))
                    await msg.ack()
            except TimeoutError:
                pass
        await sub.unsubscribe()
        return out

    return asyncio.run(_admin(url, read))  # type: ignore[arg-type,return-value]


def wait_until(client: AppClient, cond: Callable[[], bool], timeout: float = 15.0) -> None:
    """Run the app's loop (its background tasks) until ``cond`` holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        client.loop.run_until_complete(asyncio.sleep(0.05))


@pytest.fixture
def keyfile(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "keys.json"
    _, key = keys.add_key(path, client="app", rate=1000, burst=1000)
    _, small = keys.add_key(path, client="tiny", rate=0.001, burst=2)
    return path, key, small


@pytest.fixture
def client(broker: NatsServer, keyfile: tuple[Path, str, str]) -> Iterator[AppClient]:
    fresh_stream(broker.url)
    settings = make_settings(
        api_keys_file=keyfile[0],
        events_nats_url=broker.url,
        events_publish_timeout_ms=500,
        events_partitions=4,
    )
    with AppClient(create_app(settings, components=Fakes().factory)) as c:
        wait_until(c, lambda: c.app.state.events.state == "connected")
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_202_only_after_every_event_is_in_the_log(
    client: AppClient, broker: NatsServer, keyfile: tuple[Path, str, str]
) -> None:
    batch = [event(i, user_id=i % 5) for i in range(50)]
    r = client.post(
        URL, json={"events": batch}, headers={**auth(keyfile[1]), "X-Request-ID": "b-1"}
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 50, "request_id": "b-1"}
    messages = stored(broker.url)
    assert sorted(decode(d).event_id for d, _ in messages) == sorted(e["event_id"] for e in batch)
    for data, headers in messages:  # the trace context travels with each message
        assert headers["traceparent"].startswith("00-")
        assert headers["Nats-Msg-Id"] == decode(data).event_id
    text = client.get("/metrics").text
    assert 'gateway_events_total{outcome="accepted"} 50.0' in text
    assert 'gateway_event_batches_total{outcome="accepted"} 1.0' in text
    assert "gateway_events_publish_seconds_count 1.0" in text
    assert client.get("/readyz").json()["checks"]["event_log"] == "connected"


def test_a_retried_batch_is_not_stored_twice(
    client: AppClient, broker: NatsServer, keyfile: tuple[Path, str, str]
) -> None:
    batch = [event(i) for i in range(10)]
    for _ in range(2):
        assert client.post(URL, json={"events": batch}, headers=auth(keyfile[1])).status_code == 202
    assert len(stored(broker.url)) == 10


def test_invalid_events_are_reported_by_index_and_nothing_is_stored(
    client: AppClient, broker: NatsServer, keyfile: tuple[Path, str, str]
) -> None:
    batch = [
        event(0),
        event(1, type="like"),
        event(2),
        event(3, type="rating"),  # a rating without a value
        event(4, timestamp=time.time() + 3600),  # an hour ahead
        event(5, user_id=True),
    ]
    r = client.post(URL, json={"events": batch}, headers=auth(keyfile[1]))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_request"
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "type"),
        (3, "value"),
        (4, "timestamp"),
        (5, "user_id"),
    ]
    assert all(e["reason"] for e in body["errors"])
    assert stored(broker.url) == []
    assert 'gateway_events_total{outcome="invalid"} 6.0' in client.get("/metrics").text


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"events": []}', "empty"),
        (b"[]", "JSON object"),
        (b'{"events": [], "extra": 1}', "JSON object"),
        (b'{"events": {"a": 1}}', "array"),
    ],
)
def test_unusable_batches_are_422_with_a_reason(
    client: AppClient, keyfile: tuple[Path, str, str], body: bytes, why: str
) -> None:
    r = client.post(
        URL, content=body, headers={**auth(keyfile[1]), "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert why in r.json()["detail"] and r.json()["errors"] == []


def test_batch_size_and_body_limits(client: AppClient, keyfile: tuple[Path, str, str]) -> None:
    too_many = [event(i) for i in range(MAX_BATCH + 1)]
    r = client.post(URL, json={"events": too_many}, headers=auth(keyfile[1]))
    assert r.status_code == 422 and "at most 500" in r.json()["detail"]
    full = [event(i, event_id=f"{i:064d}", request_id="r" * 128) for i in range(MAX_BATCH)]
    assert client.post(URL, json={"events": full}, headers=auth(keyfile[1])).status_code == 202
    huge = {"events": [event(0)], "pad": "x" * 300_000}
    r = client.post(URL, json=huge, headers=auth(keyfile[1]))
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    # the recommendation routes keep their own 16 KiB limit
    big = {"user_id": 1, "k": 5, "exclude": list(range(5000))}
    r = client.post("/v1/recommendations", json=big, headers=auth(keyfile[1]))
    assert r.status_code == 413


def test_auth_and_rate_limit_one_token_per_batch(
    client: AppClient, keyfile: tuple[Path, str, str]
) -> None:
    r = client.post(URL, json={"events": [event(0)]})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    small = keyfile[2]  # burst 2, nearly no refill
    big_batch = {"events": [event(i) for i in range(200)]}
    assert client.post(URL, json=big_batch, headers=auth(small)).status_code == 202
    assert client.post(URL, json=big_batch, headers=auth(small)).status_code == 202
    r = client.post(URL, json={"events": [event(0)]}, headers=auth(small))
    assert r.status_code == 429 and r.headers["Retry-After"]
    # the same bucket as the recommendations
    assert client.get("/v1/recommendations/7?k=3", headers=auth(small)).status_code == 429


def test_served_answers_are_published_for_the_ctr_join(
    client: AppClient, broker: NatsServer, keyfile: tuple[Path, str, str]
) -> None:
    r = client.get(
        "/v1/recommendations/7?k=4", headers={**auth(keyfile[1]), "X-Request-ID": "rq-9"}
    )
    assert r.status_code == 200
    wait_until(client, lambda: client.app.state.events.log._served.empty())
    client.loop.run_until_complete(client.app.state.events.log.client.flush(timeout=2))
    records = [decode_served(d) for d, _ in stored(broker.url, "cascade.served.>")]
    assert len(records) == 1
    record = records[0]
    assert (record.request_id, record.user_id, record.tier) == ("rq-9", 7, "two_tower")
    assert record.model_version == "two_tower/7"
    assert record.item_ids == [i["item_id"] for i in r.json()["items"]]


def test_events_disabled_without_a_log(keyfile: tuple[Path, str, str]) -> None:
    settings = make_settings(api_keys_file=keyfile[0])
    with AppClient(create_app(settings, components=Fakes().factory)) as c:
        r = c.post(URL, json={"events": [event(0)]}, headers=auth(keyfile[1]))
        assert r.status_code == 503 and r.json()["code"] == "events_disabled"
        assert c.get("/readyz").json()["checks"]["event_log"] == "disabled"
        assert c.get("/v1/recommendations/7?k=3", headers=auth(keyfile[1])).status_code == 200
        text = c.get("/metrics").text
        assert "gateway_event_log_connected -1.0" in text
        assert "gateway_served_records_dropped_total 0.0" in text


def test_503_never_202_while_the_broker_is_down_then_202_again(
    tmp_path: Path, keyfile: tuple[Path, str, str]
) -> None:
    server = NatsServer(tmp_path / "js", log_path=tmp_path / "nats.log").start()
    fresh_stream(server.url)
    settings = make_settings(
        api_keys_file=keyfile[0], events_nats_url=server.url, events_publish_timeout_ms=300
    )
    key = auth(keyfile[1])
    try:
        with AppClient(create_app(settings, components=Fakes().factory)) as c:
            sink = c.app.state.events
            wait_until(c, lambda: sink.state == "connected")
            assert c.post(URL, json={"events": [event(0)]}, headers=key).status_code == 202
            server.stop()
            statuses = []
            for i in range(1, 6):
                r = c.post(URL, json={"events": [event(i)]}, headers=key)
                statuses.append(r.status_code)
                assert r.status_code == 503, r.text
                assert r.json()["code"] == "event_log_unavailable" and r.headers["Retry-After"]
                # recommendations keep serving, readiness holds
                assert c.get("/v1/recommendations/7?k=3", headers=key).status_code == 200
            ready = c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"]["event_log"] == "connecting"
            text = c.get("/metrics").text
            assert 'gateway_events_total{outcome="unavailable"} 5.0' in text
            assert "gateway_event_log_connected 0.0" in text
            dropped = [
                ln
                for ln in text.splitlines()
                if ln.startswith("gateway_served_records_dropped_total")
            ]
            assert float(dropped[0].split()[-1]) >= 1  # served records while down are dropped
            server.process.start()  # the same store: the stream and event 0 survive
            server.process.wait_ready(
                f"http://127.0.0.1:{server.monitor_port}/healthz?js-enabled-only=true"
            )
            wait_until(c, lambda: sink.state == "connected", timeout=30)
            r = c.post(URL, json={"events": [event(i) for i in range(1, 6)]}, headers=key)
            assert r.status_code == 202, r.text
        ids = sorted(decode(d).event_id for d, _ in stored(server.url))
        assert ids == [f"e-{i}" for i in range(6)]
    finally:
        server.stop()


def test_the_gateway_starts_and_serves_without_a_broker(
    tmp_path: Path, keyfile: tuple[Path, str, str]
) -> None:
    from cascade.runtime.procs import free_port

    settings = make_settings(
        api_keys_file=keyfile[0],
        events_nats_url=f"nats://127.0.0.1:{free_port()}",  # nothing listens there
        events_connect_timeout_ms=200,
    )
    with AppClient(create_app(settings, components=Fakes().factory)) as c:
        key = auth(keyfile[1])
        assert c.get("/readyz").status_code == 200
        assert c.get("/v1/recommendations/7?k=3", headers=key).status_code == 200
        r = c.post(URL, json={"events": [event(0)]}, headers=key)
        assert r.status_code == 503 and r.json()["code"] == "event_log_unavailable"


def test_openapi_documents_the_events_route(client: AppClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"][URL]["post"]
    assert {"202", "401", "413", "422", "429", "503"} <= set(post["responses"])
    assert "EventsAccepted" in str(post["responses"]["202"])
    assert "EventsRejected" in str(post["responses"]["422"])
    assert "Retry-After" in post["responses"]["503"]["headers"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["events"]["maxItems"] == MAX_BATCH


def test_partitions_follow_the_consumers_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """One EVENTS_PARTITIONS configures both sides; the gateway's own variable wins."""
    monkeypatch.delenv("GATEWAY_EVENTS_PARTITIONS", raising=False)
    monkeypatch.setenv("EVENTS_PARTITIONS", "8")
    assert make_settings().events_partitions == 8
    monkeypatch.setenv("GATEWAY_EVENTS_PARTITIONS", "4")
    assert make_settings().events_partitions == 4
    with pytest.raises(ValueError):
        make_settings(events_nats_url="redis://127.0.0.1:6379")  # not a NATS URL


def test_the_gateway_creates_missing_streams(
    tmp_path: Path, keyfile: tuple[Path, str, str]
) -> None:
    """No consumer has run against this broker: the gateway creates the streams itself (as the
    consumer would, same settings), so events are stored, not refused, until a consumer comes."""
    server = NatsServer(tmp_path / "js", log_path=tmp_path / "nats.log").start()
    settings = make_settings(api_keys_file=keyfile[0], events_nats_url=server.url)
    try:
        with AppClient(create_app(settings, components=Fakes().factory)) as c:
            deadline = time.monotonic() + 20
            while True:
                r = c.post(URL, json={"events": [event(0)]}, headers=auth(keyfile[1]))
                if r.status_code == 202 or time.monotonic() > deadline:
                    break
                c.loop.run_until_complete(asyncio.sleep(0.1))
            assert r.status_code == 202, r.text
        assert [decode(d).event_id for d, _ in stored(server.url)] == ["e-0"]
    finally:
        server.stop()
