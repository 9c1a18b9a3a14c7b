"""``cascade.runtime.tasks.stop_tasks``: shutdown never waits forever on a task that swallows
its cancellation (a rollout refresh loop did, and hung the gateway's lifespan in CI)."""

from __future__ import annotations

import asyncio
import time

from cascade.runtime.tasks import stop_tasks


async def _stubborn(release: asyncio.Event) -> None:
    while not release.is_set():
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:  # what a misbehaving client library does
            continue


async def _polite() -> None:
    await asyncio.sleep(3600)


def test_stop_tasks_cancels_the_polite_and_names_the_stubborn() -> None:
    async def main() -> tuple[list[str], float, bool]:
        release = asyncio.Event()
        stubborn = asyncio.create_task(_stubborn(release), name="stubborn")
        polite = asyncio.create_task(_polite(), name="polite")
        await asyncio.sleep(0.05)  # both running: a task cancelled before its first step just ends
        started = time.monotonic()
        stuck = await stop_tasks([stubborn, polite], timeout_s=0.3)
        waited = time.monotonic() - started
        done = polite.done()
        release.set()  # let it end, or asyncio.run would wait for it forever
        await stubborn
        return stuck, waited, done

    stuck, waited, polite_done = asyncio.run(main())
    assert stuck == ["stubborn"] and polite_done
    assert waited < 30  # bounded (not a timing assertion: it would otherwise never return)


def test_nothing_to_stop() -> None:
    assert asyncio.run(stop_tasks([])) == []
