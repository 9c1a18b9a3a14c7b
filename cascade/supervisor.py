"""Supervision of ``cascade up``'s children: restart a process that died, after a backoff.

The backoff starts at 1 s, doubles to at most 30 s, and resets once a child has been up 60 s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from cascade.runtime.procs import ManagedProcess

logger = logging.getLogger(__name__)

BACKOFF_START_S, BACKOFF_MAX_S, BACKOFF_RESET_AFTER_S = 1.0, 30.0, 60.0


@dataclass
class Child:
    """One supervised process: how to check it is ready, and its restart state. A child that is
    not ``required`` (the events consumer) is supervised the same way, but ``cascade up`` does
    not wait for it before serving: recommendations do not depend on it."""

    proc: ManagedProcess
    ready_url: str
    required: bool = True
    restarts: int = 0
    backoff_s: float = BACKOFF_START_S
    started_at: float = 0.0
    restart_at: float | None = None

    def start(self, now: float | None = None) -> None:
        self.proc.start()
        self.started_at = time.monotonic() if now is None else now
        self.restart_at = None


@dataclass
class Stack:
    """The running children, in start order."""

    children: list[Child] = field(default_factory=list)

    def supervise_once(self, now: float) -> None:
        """Restart children that died, each after its own backoff."""
        for child in self.children:
            if child.proc.running():
                if now - child.started_at > BACKOFF_RESET_AFTER_S:
                    child.backoff_s = BACKOFF_START_S
                continue
            if child.restart_at is None:
                code = child.proc.proc.returncode if child.proc.proc else None
                child.restart_at = now + child.backoff_s
                logger.warning(
                    "%s exited (code %s); restarting in %.0fs (log %s)",
                    child.proc.name,
                    code,
                    child.backoff_s,
                    child.proc.log_path,
                )
                child.backoff_s = min(BACKOFF_MAX_S, child.backoff_s * 2)
            elif now >= child.restart_at:
                child.restarts += 1
                child.start(now)

    def stop(self) -> None:
        """Stop in reverse start order (callers first, then what they call)."""
        for child in reversed(self.children):
            child.proc.stop(grace=15)
