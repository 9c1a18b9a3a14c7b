"""A sampler that runs ``_run`` as one background task: ``start()`` it, ``await stop()`` it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self


class BackgroundLoop:
    """Mixin for the drills' samplers; the subclass defines ``_task`` (None) and ``_run``."""

    _task: asyncio.Task[None] | None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
