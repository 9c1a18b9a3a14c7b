"""The guard and the throttle of the MF service's admin endpoint (``POST /admin/reload``).

The admin endpoint shares the port with the API and ``/metrics``, and each call loads a whole
model (a memory spike, or a roll-back to an old version when it names one). So (issue 20,
item 3):

- With ``MF_ADMIN_TOKEN`` set, it needs ``Authorization: Bearer <token>`` (constant-time
  comparison; 401 otherwise, one answer whatever was wrong).
- Without a token it answers loopback peers only (``cascade up``, ``kubectl exec`` into the pod),
  403 for anyone else: in a container, where the service listens on ``0.0.0.0``, nobody else
  can reload it until a token is configured.
- At most one reload per ``MF_RELOAD_MIN_INTERVAL_S`` (10 s; failed loads count too): 429 with
  ``Retry-After`` otherwise. The periodic follow of ``latest`` is not throttled.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections.abc import Callable

from starlette.requests import Request

from fallback_mf.service.errors import AdminForbidden, AdminUnauthorized, ReloadThrottled
from fallback_mf.service.settings import MfSettings


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def check_admin(request: Request, settings: MfSettings) -> None:
    """Raise :class:`AdminUnauthorized` / :class:`AdminForbidden` unless the caller may
    administer this process."""
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    if token is None:
        if not _loopback(request.client.host if request.client else None):
            raise AdminForbidden(
                "admin calls are served to loopback peers only (or set MF_ADMIN_TOKEN)"
            )
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), token.encode()
    ):
        raise AdminUnauthorized(
            "missing or invalid admin token",
            headers={"WWW-Authenticate": 'Bearer realm="mf-admin"'},
        )


class ReloadThrottle:
    """At most one admitted call per ``min_interval_s`` (injected clock for tests)."""

    def __init__(
        self, min_interval_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._last: float | None = None

    def admit(self) -> None:
        """Take the slot or raise :class:`ReloadThrottled` with the seconds to wait."""
        now = self.clock()
        if self.min_interval_s > 0 and self._last is not None:
            wait = self._last + self.min_interval_s - now
            if wait > 0:
                retry = str(max(1, math.ceil(wait)))
                raise ReloadThrottled(
                    f"one reload per {self.min_interval_s:g} s; retry after {retry} s",
                    headers={"Retry-After": retry},
                )
        self._last = now
