"""Garbage-collector pauses: measured per generation, and kept short by freezing startup objects.

A full (generation 2) collection walks every tracked object; the gateway holds tens of thousands
from startup alone (Feast's registry and protobufs, OpenTelemetry, pydantic, FastAPI), so one
can stop the event loop for tens of milliseconds, and every request in flight waits.
``gc.freeze()`` after startup moves those objects to a permanent generation that collections
skip (the CPython documentation's advice for forking servers, used by Instagram's Django
fleet). Each pause is observed in ``gateway_gc_pause_seconds{generation}``; one over
``SLOW_PAUSE_S`` is logged.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram

logger = logging.getLogger(__name__)
SLOW_PAUSE_S = 0.05


def watch(histogram: Histogram) -> Callable[[], None]:
    """Observe every collection's pause in ``histogram`` (label ``generation``); returns undo."""
    started = 0.0

    def callback(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
            return
        pause = time.perf_counter() - started
        generation = str(info.get("generation", "?"))
        histogram.labels(generation=generation).observe(pause)
        if pause > SLOW_PAUSE_S:
            logger.warning(
                "gc generation %s paused the loop %.0f ms (%s collected)",
                generation,
                pause * 1000,
                info.get("collected"),
            )

    gc.callbacks.append(callback)
    return lambda: gc.callbacks.remove(callback)


def freeze_startup_objects() -> int:
    """Collect once, then move every surviving object out of the collector's sight."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
