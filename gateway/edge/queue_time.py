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
request is then timed from the middleware as before. A client that forges the header can only
shorten its own request's budget; an ingress must overwrite (not append to) the header.
"""

from __future__ import annotations

import time

ARRIVED_KEY = "arrived"  # scope["state"]: time.monotonic() of the arrival (ingress or middleware)
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
