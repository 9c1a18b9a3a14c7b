"""Upstream health for ``/readyz``, probed at most once per ``ttl_s``.

``/readyz`` is an open path (probes carry no credentials), so without a cache every hit cost two
upstream calls (Triton's model-ready, MF's ``/readyz``): an anonymous client could turn the
gateway into an amplifier against its own upstreams. The answer is cached for ``ttl_s``
(``READY_CACHE_S``, 2 s: a kubelet probes every 5-10 s, so it still sees fresh news), and callers
that arrive while a probe runs share it: at most one upstream probe per TTL, whatever the rate.
Upstream health never gates readiness (see ``gateway.routes.readyz``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from gateway.components import Components

READY_CACHE_S = 2.0
# Long enough for a model-ready call on a busy node (0.2 s read a loaded CI machine's Triton as
# down), short enough for a kubelet's 1 s probe timeout.
PROBE_TIMEOUT_S = 0.5


@runtime_checkable
class Probed(Protocol):
    """A tier that can say whether its upstream is ready."""

    async def ready(self, *, timeout_s: float = 0.5) -> bool: ...


class UpstreamReadiness:
    """``checks()`` -> ``{"triton": ..., "mf": ..., "triton_similar": ...}`` (``ready``,
    ``down``, ``unconfigured``)."""

    def __init__(
        self,
        components: Components,
        *,
        ttl_s: float = READY_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.components = components
        self.ttl_s = ttl_s
        self.clock = clock
        self.probes = 0  # upstream probes made (tests, debugging)
        self._value: dict[str, str] | None = None
        self._at = 0.0
        self._running: asyncio.Future[dict[str, str]] | None = None

    async def checks(self) -> dict[str, str]:
        """The cached answer while fresh, else one shared probe."""
        if self._value is not None and self.clock() - self._at < self.ttl_s:
            return self._value
        if self._running is None:
            self._running = asyncio.ensure_future(self._probe())
        # shield: a caller that goes away (client disconnect) does not cancel the others' probe
        return await asyncio.shield(self._running)

    async def _probe(self) -> dict[str, str]:
        try:
            self.probes += 1
            comps = self.components
            primary = comps.primary.ready(timeout_s=PROBE_TIMEOUT_S) if comps.primary else None
            mf = comps.fallback.ready(timeout_s=PROBE_TIMEOUT_S) if comps.fallback else None
            tier = comps.similar.primary if comps.similar else None
            similar = tier.ready(timeout_s=PROBE_TIMEOUT_S) if isinstance(tier, Probed) else None
            answers = await asyncio.gather(*(c for c in (primary, mf, similar) if c is not None))
            it = iter(answers)
            value = {
                "triton": "unconfigured" if primary is None else ("ready" if next(it) else "down"),
                "mf": "unconfigured" if mf is None else ("ready" if next(it) else "down"),
                "triton_similar": (
                    "unconfigured" if similar is None else ("ready" if next(it) else "down")
                ),
            }
            self._value, self._at = value, self.clock()
            return value
        finally:
            self._running = None
