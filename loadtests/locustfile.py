"""Cascade's Locust traffic: Zipf-distributed known users, some unknown ones, a mix of k, GET and POST.

Imports only the stdlib, locust and gevent: the stock ``locustio/locust`` image runs it
(docker-compose's ``locust`` service). Environment:

- ``CASCADE_LOADTEST_USERS``: known user ids, most active first (Zipf rank order): a text file
  with one id per line (``python -m cascade.drills.loadtest`` writes one), or a ``.npy`` int64
  array such as the ALS artifact's ``user_ids.npy``. Default: ``$CASCADE_HOME/artifacts/als/
  <latest>/user_ids.npy`` when it exists, else ids 0..999.
- ``CASCADE_UNKNOWN_SHARE`` (0.05): share of requests for ids nobody knows (cold start).
- ``CASCADE_POST_SHARE`` (0.2): share of POSTs, each with 3 excluded item ids.
- ``CASCADE_ZIPF_S`` (1.1): Zipf exponent over the user ranks.
- ``CASCADE_USER_RPS`` (2): requests/s per Locust user (``constant_throughput``).
- ``CASCADE_LOAD_SHAPE``: ``steady``, ``ramp`` or ``spike`` (``loadtests/shapes.py``); unset:
  Locust's own ``-u``/``-r``/``-t``.
- ``CASCADE_API_KEY``: sent as ``Authorization: Bearer <key>`` when set.
- ``CASCADE_LOADTEST_OUTCOMES``: where to write, when Locust stops, every answer's tier,
  fallback reason and error cause counted per second (``loadtests/outcomes.py``); unset: not kept.
- ``CASCADE_EVENTS`` (``0``): ``1`` makes each user behave as an app that reports feedback
  (``POST /v1/events``): after every recommendation one impression batch of its k items with the
  answer's ``request_id``, and for ``CASCADE_CLICK_SHARE`` (0.05) of them a click on one shown
  item. ``CASCADE_LOADTEST_EVENTS``: where to write the events' counts (JSON: batches by status,
  events sent and accepted, the last event's id and time) when Locust stops.

Each request is named after the tier that served it (``X-Served-By``), e.g.
``GET /v1/recommendations/[user] [two_tower]``, so Locust's statistics split by tier; a non-2xx
answer is a failure named ``[error]``. Events are ``POST /v1/events [events]`` (their own row).
"""

from __future__ import annotations

import ast
import bisect
import itertools
import json
import os
import random
import sys
import time
from array import array
from pathlib import Path

from locust import HttpUser, constant_throughput, events, task

# The package is installed here; PYTHONPATH in the Locust image.
from loadtests import outcomes, shapes

PATH = "/v1/recommendations"
UNKNOWN_BASE = 10**12  # above any data set's ids
KS = (10, 20, 50)
K_WEIGHTS = (0.5, 0.35, 0.15)


def read_npy_int64(path: Path) -> list[int]:
    """A 1-D little-endian int64 ``.npy`` file, read without numpy."""
    data = path.read_bytes()
    if data[:6] != b"\x93NUMPY":
        raise ValueError(f"{path} is not a .npy file")
    major = data[6]
    size_len = 2 if major == 1 else 4
    header_len = int.from_bytes(data[8 : 8 + size_len], "little")
    start = 8 + size_len
    header = ast.literal_eval(data[start : start + header_len].decode("latin-1"))
    if (
        header.get("descr") not in ("<i8", "|i8")
        or header.get("fortran_order")
        or len(header["shape"]) != 1
    ):
        raise ValueError(f"{path}: expected a 1-D little-endian int64 array, got {header}")
    values = array("q")
    values.frombytes(data[start + header_len :])
    if sys.byteorder != "little":
        values.byteswap()
    return list(values)


def read_users(path: Path) -> list[int]:
    """User ids from a ``.npy`` array or a text file (one id per line, first CSV column)."""
    if path.suffix == ".npy":
        return read_npy_int64(path)
    ids = []
    for line in path.read_text().splitlines():
        cell = line.split(",")[0].strip()
        if cell.isdigit():
            ids.append(int(cell))
    return ids


def default_users() -> list[int]:
    explicit = os.environ.get("CASCADE_LOADTEST_USERS")
    if explicit:
        return read_users(Path(explicit))
    als = Path(os.environ.get("CASCADE_HOME", "var")) / "artifacts" / "als"
    latest = als / "latest"
    if latest.is_file():
        candidate = als / latest.read_text().strip() / "user_ids.npy"
        if candidate.is_file():
            return read_npy_int64(candidate)
    return list(range(1000))


class Population:
    """Who asks: Zipf over the known users' ranks, plus a share of unknown ids."""

    def __init__(
        self, users: list[int], *, zipf_s: float, unknown_share: float, seed: int | None = None
    ) -> None:
        if not users:
            raise ValueError("no known user ids to load-test with")
        self.users = users
        self.unknown_share = unknown_share
        self.cum = list(itertools.accumulate(1.0 / r**zipf_s for r in range(1, len(users) + 1)))
        self.rng = random.Random(seed)

    def user(self) -> int:
        if self.rng.random() < self.unknown_share:
            return UNKNOWN_BASE + self.rng.randrange(1_000_000)
        i = bisect.bisect_left(self.cum, self.rng.random() * self.cum[-1])
        return self.users[min(i, len(self.users) - 1)]

    def k(self) -> int:
        return self.rng.choices(KS, weights=K_WEIGHTS)[0]


POPULATION = Population(
    default_users(),
    zipf_s=float(os.environ.get("CASCADE_ZIPF_S", "1.1")),
    unknown_share=float(os.environ.get("CASCADE_UNKNOWN_SHARE", "0.05")),
)
POST_SHARE = float(os.environ.get("CASCADE_POST_SHARE", "0.2"))
OUTCOMES = outcomes.Outcomes()
OUTCOMES_PATH = os.environ.get("CASCADE_LOADTEST_OUTCOMES", "")


def record(method: str, response: object) -> None:
    """Count the answer's tier, fallback reason and error cause (``OUTCOMES``)."""
    status = int(getattr(response, "status_code", 0) or 0)
    headers = getattr(response, "headers", None) or {}
    ok = 200 <= status < 300
    tier = str(headers.get("X-Served-By") or "") if ok else ""
    # The body is read only when the answer needs it: an error's code, or a reason not in headers.
    needs_body = not ok or (tier not in ("", "two_tower") and not headers.get("X-Fallback-Reason"))
    body = getattr(response, "content", None) if needs_body else None
    OUTCOMES.add(
        method,
        status,
        tier,
        outcomes.fallback_reason(status, headers, body),
        outcomes.error_cause(status, body, getattr(response, "error", None)),
    )


EVENTS_ON = os.environ.get("CASCADE_EVENTS", "0") == "1"
CLICK_SHARE = float(os.environ.get("CASCADE_CLICK_SHARE", "0.05"))
EVENTS_PATH = "/v1/events"
EVENTS_OUT = os.environ.get("CASCADE_LOADTEST_EVENTS", "")


class EventCounts:
    """What the events API answered: batches by status, events sent and accepted (202)."""

    def __init__(self) -> None:
        self.batches: dict[str, int] = {}
        self.sent = 0
        self.accepted = 0
        self.clicks = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._ids = itertools.count()
        self._prefix = f"lt{os.getpid():x}{random.getrandbits(32):08x}"

    def next_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def add(self, status: int, n: int) -> None:
        self.batches[str(status)] = self.batches.get(str(status), 0) + 1
        self.sent += n
        now = time.time()
        self.first_at = self.first_at or now
        if status == 202:
            self.accepted += n
            self.last_at = now

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": "cascade-loadtest-events/1",
            "batches_by_status": self.batches,
            "events_sent": self.sent,
            "events_accepted": self.accepted,
            "clicks": self.clicks,
            "first_at": self.first_at,
            "last_accepted_at": self.last_at,
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")


EVENT_COUNTS = EventCounts()


def _write_outcomes(**_: object) -> None:
    if OUTCOMES_PATH:
        OUTCOMES.write(Path(OUTCOMES_PATH))
    if EVENTS_OUT:
        EVENT_COUNTS.write(Path(EVENTS_OUT))


events.quitting.add_listener(_write_outcomes)  # type: ignore[no-untyped-call]


def tier_name(base: str, response: object) -> str:
    """``base [tier]`` from the response's ``X-Served-By``; ``[error]`` for a non-2xx answer."""
    status = getattr(response, "status_code", 0) or 0
    if not 200 <= status < 300:
        return f"{base} [error]"
    headers = getattr(response, "headers", None) or {}
    return f"{base} [{headers.get('X-Served-By') or 'unknown'}]"


class RecommendationUser(HttpUser):
    """A client app asking for recommendations."""

    wait_time = constant_throughput(float(os.environ.get("CASCADE_USER_RPS", "2")))

    def on_start(self) -> None:
        key = os.environ.get("CASCADE_API_KEY", "")
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"

    def _send(self, method: str, base: str, url: str, body: dict[str, object] | None) -> None:
        # Stamped as the ingress would: the gateway counts queue time and its deadline from here.
        stamp = {"X-Request-Start": f"t={time.time():.6f}"}
        with self.client.request(
            method, url, json=body, name=base, headers=stamp, catch_response=True
        ) as response:
            response.request_meta["name"] = tier_name(base, response)
            record(method, response)
            if not 200 <= response.status_code < 300:
                response.failure(f"HTTP {response.status_code}")
                return
            answer = response.content
        if EVENTS_ON:
            self._feedback(answer)

    def _feedback(self, answer: bytes | None) -> None:
        """What an app sends after showing a recommendation: an impression per shown item (one
        batch, linked by the answer's request_id), and now and then a click on one of them."""
        try:
            body = json.loads(answer or b"{}")
            user, request_id = int(body["user_id"]), str(body["request_id"])
            shown = [int(i["item_id"]) for i in body["items"]]
        except (ValueError, KeyError, TypeError):
            return
        if not shown:
            return
        now = time.time()
        batch: list[dict[str, object]] = [
            {"event_id": EVENT_COUNTS.next_id(), "user_id": user, "item_id": item,
             "type": "impression", "timestamp": now, "request_id": request_id}
            for item in shown
        ]  # fmt: skip
        self._post_events(batch)
        if POPULATION.rng.random() < CLICK_SHARE:
            EVENT_COUNTS.clicks += 1
            click = {"event_id": EVENT_COUNTS.next_id(), "user_id": user,
                     "item_id": POPULATION.rng.choice(shown), "type": "click",
                     "timestamp": time.time(), "request_id": request_id}  # fmt: skip
            self._post_events([click])

    def _post_events(self, batch: list[dict[str, object]]) -> None:
        name = f"POST {EVENTS_PATH}"
        with self.client.post(
            EVENTS_PATH, json={"events": batch}, name=name, catch_response=True
        ) as response:
            EVENT_COUNTS.add(int(response.status_code or 0), len(batch))
            if response.status_code == 202:
                response.request_meta["name"] = f"{EVENTS_PATH} [events]"
            else:
                response.request_meta["name"] = f"{EVENTS_PATH} [events-error]"
                response.failure(f"HTTP {response.status_code}")

    @task
    def recommend(self) -> None:
        user, k = POPULATION.user(), POPULATION.k()
        if POPULATION.rng.random() < POST_SHARE:
            exclude = POPULATION.rng.sample(range(1, 2000), 3)
            self._send("POST", PATH, PATH, {"user_id": user, "k": k, "exclude": exclude})
        else:
            self._send("GET", f"{PATH}/[user]", f"{PATH}/{user}?k={k}", None)


_shape = shapes.from_env()
if _shape is not None:
    # Locust picks up a LoadTestShape subclass defined in the locustfile's namespace.
    class CascadeShape(_shape):  # type: ignore[valid-type,misc]
        """The shape selected by CASCADE_LOAD_SHAPE."""
