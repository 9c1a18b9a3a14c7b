"""Tracing setup: the batch processor's export batch (smaller than the SDK's, see telemetry.py)."""

from __future__ import annotations

import pytest

from cascade.runtime.telemetry import EXPORT_BATCH_SIZE, _export_batch_size


def test_export_batch_defaults_to_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
    monkeypatch.delenv("OTEL_BSP_MAX_QUEUE_SIZE", raising=False)
    assert _export_batch_size() == EXPORT_BATCH_SIZE == 128


def test_export_batch_from_the_environment_is_left_to_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")
    assert _export_batch_size() is None


@pytest.mark.parametrize(("queue", "batch"), [("64", 64), ("bad", 128), ("4096", 128)])
def test_export_batch_never_exceeds_the_queue(
    monkeypatch: pytest.MonkeyPatch, queue: str, batch: int
) -> None:
    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", queue)
    assert _export_batch_size() == batch
