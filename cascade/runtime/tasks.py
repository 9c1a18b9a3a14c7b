"""Stopping background tasks at shutdown without trusting them to honour cancellation.

``task.cancel(); await task`` waits forever for a task that swallows its ``CancelledError``
(a client library that catches it mid-command and carries on: seen in CI, a rollout refresh
loop kept ticking and the gateway's lifespan shutdown hung). ``stop_tasks`` cancels every task
and waits at most ``timeout_s`` for all of them together; whatever is still running then is left
to the event loop's own end, and named so the caller can log it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

STOP_TIMEOUT_S = 2.0


async def stop_tasks(
    tasks: Iterable[asyncio.Task[object]], *, timeout_s: float = STOP_TIMEOUT_S
) -> list[str]:
    """Cancel ``tasks`` and wait up to ``timeout_s`` for them; the names of those still running."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return []
    _, stuck = await asyncio.wait(pending, timeout=timeout_s)
    return sorted(t.get_name() for t in stuck)
