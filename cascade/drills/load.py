"""An asyncio open-loop load generator for the drills (httpx), bounded in count and time.

Open loop: request ``i`` is sent at ``t0 + i / rate`` whether or not earlier ones have answered,
so a slow gateway sees the load pile up as real clients would make it (a closed loop would slow
down with it and hide the problem). ``max_in_flight`` bounds the generator's own memory; a
request it could not send because of that bound is recorded with status ``NOT_SENT`` and is
never counted as the gateway's error.

Traffic (:class:`Traffic`): Zipf-distributed known users, a share of unknown ids, a mix of k,
GET and POST (with exclusions). An API key from ``CASCADE_API_KEY`` goes in ``Authorization``;
each request carries ``X-Request-Start`` as an ingress would set it (``gateway.edge.queue_time``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import httpx

from cascade.drills.background import BackgroundLoop

RECOMMENDATIONS = "/v1/recommendations"
CLIENT_ERROR = 0  # timeout or connection error: no HTTP status
NOT_SENT = -1  # the generator was at max_in_flight
UNKNOWN_USER_BASE = 10**12  # far above any data set's ids


@dataclass(frozen=True)
class Sample:
    """One request: start time (seconds since the drill's t0), latency, status, tier, reason."""

    t: float
    latency: float
    status: int
    tier: str = ""
    reason: str = ""
    method: str = "GET"
    broken: str = ""  # a 200 whose body breaks the contract: which rule (see broken_answer)


def auth_headers(api_key: str | None = None) -> dict[str, str]:
    """``Authorization: Bearer <key>`` from ``api_key`` or ``CASCADE_API_KEY`` (nothing if unset)."""
    key = api_key if api_key is not None else os.environ.get("CASCADE_API_KEY", "")
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass
class Traffic:
    """What a request asks for. ``users`` are the known ids, most popular first for Zipf."""

    users: Sequence[int]
    unknown_share: float = 0.05
    ks: Sequence[int] = (10, 20, 50)
    k_weights: Sequence[float] = (0.5, 0.35, 0.15)
    post_share: float = 0.2
    zipf_s: float = 1.1
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _cum: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("Traffic needs at least one known user id")
        self._rng = random.Random(self.seed)
        weights = (1.0 / (rank**self.zipf_s) for rank in range(1, len(self.users) + 1))
        self._cum = list(itertools.accumulate(weights))

    def user(self) -> int:
        if self._rng.random() < self.unknown_share:
            return UNKNOWN_USER_BASE + self._rng.randrange(1_000_000)
        return int(self._rng.choices(self.users, cum_weights=self._cum)[0])

    def request(self) -> tuple[str, str, dict[str, object] | None]:
        """``(method, path, json body or None)``."""
        user = self.user()
        k = self._rng.choices(list(self.ks), weights=list(self.k_weights))[0]
        if self._rng.random() < self.post_share:
            exclude = self._rng.sample(range(1, 2000), 3)
            return "POST", RECOMMENDATIONS, {"user_id": user, "k": k, "exclude": exclude}
        return "GET", f"{RECOMMENDATIONS}/{user}?k={k}", None


def broken_answer(payload: bytes, *, k: int) -> str:
    """Which promise a 200 body breaks ("" when none): the client's view of answer integrity.

    Exactly k unique integer ids (fewer only from ``popular`` when the catalogue runs out) and
    finite scores, best first. JSON has no NaN: a non-finite score would arrive as null.
    """
    try:
        body = json.loads(payload)
        items = body["items"]
        ids = [i["item_id"] for i in items]
        scores = [i["score"] for i in items]
    except (ValueError, KeyError, TypeError):
        return "unreadable"
    if not all(type(i) is int and i >= 0 for i in ids):
        return "id"
    if not all(type(s) in (int, float) and math.isfinite(s) for s in scores):
        return "score"
    if len(set(ids)) != len(ids):
        return "duplicate"
    if len(ids) != k and not (len(ids) < k and body.get("served_by") == "popular"):
        return "count"
    if any(a < b for a, b in itertools.pairwise(scores)):
        return "order"
    return ""


def _k_of(path: str, body: object) -> int:
    if isinstance(body, dict):
        return int(body.get("k", 20))
    _, _, query = path.partition("?k=")
    return int(query) if query else 20


def _error_code(status: int, payload: bytes) -> str:
    """An error answer's ``code`` (``overloaded``, ``not_ready``...): which 503 it was."""
    if status < 400:
        return ""
    try:
        body = json.loads(payload)
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""


class LoadGenerator:
    """Sends requests open-loop; every answer becomes a :class:`Sample` in ``samples``."""

    def __init__(
        self,
        *,
        url: str,
        traffic: Traffic,
        t0: float,
        timeout_s: float = 5.0,
        max_in_flight: int = 256,
        api_key: str | None = None,
    ) -> None:
        self.url = url
        self.traffic = traffic
        self.t0 = t0
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.headers = auth_headers(api_key)
        self.samples: list[Sample] = []
        self.rate = 0.0  # requests/s; may be changed while running (a spike)
        self._in_flight = 0
        self._stopped = False

    def stop(self) -> None:
        """End ``run`` at its next send (requests in flight still finish)."""
        self._stopped = True

    async def _one(
        self, session: aiohttp.ClientSession, method: str, path: str, body: object
    ) -> None:
        started = time.monotonic()
        # Stamped as an ingress would (nginx t=${msec}): the gateway counts its deadline and
        # queue-time shedding from here, so time spent waiting in its socket counts too.
        stamp = {"X-Request-Start": f"t={time.time():.6f}"}
        try:
            async with session.request(method, path, json=body, headers=stamp) as response:
                payload = await response.read()
                status = response.status
                tier = response.headers.get("X-Served-By", "")
                reason = response.headers.get("X-Fallback-Reason", "") or _error_code(
                    status, payload
                )
            latency = time.monotonic() - started
            broken = broken_answer(payload, k=_k_of(path, body)) if status == 200 else ""
        except (aiohttp.ClientError, TimeoutError) as exc:  # the reason names the client error
            status, tier, reason, broken = CLIENT_ERROR, "", type(exc).__name__, ""
            latency = time.monotonic() - started
        finally:
            self._in_flight -= 1
        self.samples.append(
            Sample(started - self.t0, latency, status, tier, reason, method, broken)
        )

    async def run(
        self, *, rate: float, duration_s: float = math.inf, max_requests: int = 10**6
    ) -> None:
        """Send at ``self.rate`` requests/s (starting at ``rate``) until ``duration_s``,
        ``max_requests`` or :meth:`stop`; then wait for the answers in flight."""
        self.rate = rate
        # aiohttp, not httpx: about a third of the CPU per request, and this process shares the
        # cores with the stack it measures. Idle connections expire before uvicorn's 5 s
        # keep-alive timeout closes them under us.
        connector = aiohttp.TCPConnector(limit=self.max_in_flight, keepalive_timeout=2.0)
        async with aiohttp.ClientSession(
            base_url=self.url,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers=self.headers,
        ) as client:
            start = time.monotonic()
            next_at = start
            tasks: set[asyncio.Task[None]] = set()
            sent = 0
            while sent < max_requests and not self._stopped:
                now = time.monotonic()
                if now - start >= duration_s:
                    break
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at += 1.0 / max(self.rate, 0.1)
                sent += 1
                method, path, body = self.traffic.request()
                if self._in_flight >= self.max_in_flight:
                    self.samples.append(
                        Sample(time.monotonic() - self.t0, 0.0, NOT_SENT, method=method)
                    )
                    continue
                self._in_flight += 1
                task = asyncio.create_task(self._one(client, method, path, body))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout_s + 1)


@dataclass
class HealthProbe(BackgroundLoop):
    """``GET /healthz`` every ``interval_s``: its latency bounds the gateway's event-loop lag.

    Used when the gateway exports no event-loop lag metric: a handler that does no I/O can only
    answer late when the loop is busy (or the probe's own loop is).
    """

    url: str
    t0: float
    interval_s: float = 0.05
    samples: list[tuple[float, float]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
            while True:
                started = time.monotonic()
                try:
                    await client.get("/healthz")
                    self.samples.append((started - self.t0, time.monotonic() - started))
                except httpx.HTTPError:
                    self.samples.append((started - self.t0, 2.0))
                await asyncio.sleep(self.interval_s)
