"""Time a request spent queued before the gateway's code saw it, from an ingress timestamp.

Under overload, requests wait in the listen socket and in uvicorn before the first middleware
runs; a clock started there cannot see that wait, so accepted requests could be answered seconds
late while every in-app figure looked healthy (drill D7 measured a 5.7 s p99). The ingress
(nginx: ``proxy_set_header X-Request-Start "t=${msec}";``, Heroku's router, most load balancers)
stamps the wall-clock time it received the request; the gateway subtracts it from its own clock,
so the deadline and queue-time shedding count from the ingress, and a request that already
waited too long is refused at once (a cheap 503) instead of being served too late.

Accepted forms: ``t=<seconds>`` with a fraction (nginx ``$msec``), or whole milliseconds or
microseconds since the epoch, with or without ``t=``. A stamp that does not parse, lies in the
future by more than ``MAX_SKEW_S`` (clock skew) or is older than ``MAX_WAIT_S`` is ignored: the
request is then timed from the middleware as before. An ingress must overwrite (not append to)
the header.

Who is believed (issue 20, item 4): a stamp is honoured at the edge, before authentication,
only when the peer is a configured proxy (``GATEWAY_TRUSTED_PROXIES``, CIDRs: the ingress). From
any other peer it is kept aside (``PENDING_KEY``) and applied only once the request is
authenticated (the route handler, :func:`apply_pending_stamp`): an anonymous client with a 30 s
old stamp gets the 401 it deserves, never a 503 that would feed the 5xx alert and the
autoscaler; an authenticated client that forges it only shortens its own budget.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable

ARRIVED_KEY = "arrived"  # scope["state"]: time.monotonic() of the arrival (ingress or middleware)
PENDING_KEY = "request_start"  # scope["state"]: a stamp from an untrusted peer, not yet applied
MAX_SKEW_S = 1.0  # a stamp this far in the future is clock skew: ignored
MAX_WAIT_S = 60.0  # older than this: a stale or bogus stamp, ignored
_MS_FLOOR = 1e11  # seconds since the epoch stay below this until the year 5138
_US_FLOOR = 1e14


def upstream_wait(value: bytes | str | None, now_wall: float) -> float | None:
    """Seconds between the ingress stamp ``value`` and ``now_wall`` (``time.time()``), or None.

    Never negative: a stamp up to ``MAX_SKEW_S`` in the future counts as 0.
    """
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.startswith("t="):
        text = text[2:]
    try:
        stamp = float(text)
    except ValueError:
        return None
    if stamp != stamp or stamp <= 0:  # NaN or nonsense
        return None
    if stamp >= _US_FLOOR:
        stamp /= 1e6
    elif stamp >= _MS_FLOOR:
        stamp /= 1e3
    waited = now_wall - stamp
    if waited < -MAX_SKEW_S or waited > MAX_WAIT_S:
        return None
    return max(0.0, waited)


def queued_for(state: dict[str, object], now: float) -> float | None:
    """Seconds since the request arrived (``state[ARRIVED_KEY]``), or None when not stamped."""
    arrived = state.get(ARRIVED_KEY)
    return now - arrived if isinstance(arrived, float) else None


def queued_detail(queued_s: float) -> str:
    """The 503 ``detail`` of a request shed for its queue time (one wording everywhere)."""
    return f"queued {queued_s * 1000:.0f} ms before serving; retry shortly"


def queue_shed_detail(state: dict[str, object], threshold_s: float) -> str | None:
    """The one queue-time shed rule: the 503 detail when the request has waited more than
    ``threshold_s`` since it arrived (0: never), else None. Checked at the edge (before auth
    and routing) and again when the handler starts; one threshold for both
    (``GatewaySettings.queue_shed_s``)."""
    if not threshold_s:
        return None
    queued = queued_for(state, time.monotonic())
    return queued_detail(queued) if queued is not None and queued > threshold_s else None


def trusted_peers(cidrs: str) -> Callable[[str], bool] | None:
    """A predicate "this peer address is a configured proxy" for a comma-separated CIDR list
    (``"10.0.0.0/8, 192.168.1.7"``), or None when the list is empty (no peer is trusted).
    Answers are cached per address (a handful of ingress pods), so the hot path pays one dict
    lookup. Raises ValueError for a malformed entry."""
    networks = tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in cidrs.split(",")
        if part.strip()
    )
    if not networks:
        return None

    @functools.lru_cache(maxsize=4096)
    def trusted(host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        address = mapped or address
        return any(address in network for network in networks)

    return trusted


def apply_pending_stamp(state: dict[str, object], now_wall: float) -> float | None:
    """Apply a stamp kept aside for an untrusted peer (``PENDING_KEY``) now that the request is
    authenticated: move ``state[ARRIVED_KEY]`` back by the wait. Returns the wait, or None when
    there was no usable stamp."""
    raw = state.pop(PENDING_KEY, None)
    if not isinstance(raw, bytes):
        return None
    waited = upstream_wait(raw, now_wall)
    arrived = state.get(ARRIVED_KEY)
    if waited is None or not isinstance(arrived, float):
        return None
    state[ARRIVED_KEY] = arrived - waited
    return waited
