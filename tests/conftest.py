"""Test-wide configuration: markers that depend on the machine, and an isolated Cascade home."""

from __future__ import annotations

# Before anything imports feast: `import feast` sets PROMETHEUS_MULTIPROC_DIR, and prometheus_client
# picks its value class (multiprocess or not) when it is first imported. The services import it
# first too (gateway.metrics at import time, Feast only when the store opens).
import prometheus_client  # noqa: F401
import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection built (modules, test items, Hypothesis strategies): a full garbage
    collection then walks only what the tests allocate. Pauses of 0.2-0.45 s of this process
    were seen otherwise, long enough to eat the deadline of an in-process gateway under test."""
    import gc

    gc.collect()
    gc.freeze()
