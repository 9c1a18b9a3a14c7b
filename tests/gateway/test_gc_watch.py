"""GC pauses are observed per generation; startup objects can be frozen out of collections."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, Histogram

from gateway import gc_watch


def test_every_collection_is_observed_by_generation_until_undone() -> None:
    registry = CollectorRegistry()
    pauses = Histogram("pause", "test", ["generation"], registry=registry)
    undo = gc_watch.watch(pauses)
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        undo()
    count = registry.get_sample_value
    assert count("pause_count", {"generation": "0"}) == 1
    assert count("pause_count", {"generation": "2"}) == 1
    gc.collect()
    assert count("pause_count", {"generation": "2"}) == 1  # undone: no longer observed


def test_freezing_moves_survivors_out_of_the_collectors_sight() -> None:
    try:
        frozen = gc_watch.freeze_startup_objects()
        assert frozen > 0 and gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()  # the rest of the test run collects normally
