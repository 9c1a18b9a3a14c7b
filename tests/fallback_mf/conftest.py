"""Fixtures of the MF service tests (helpers: ``tests/fallback_mf/service_helpers.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fallback_mf.service.main import create_app
from tests.fallback_mf.service_helpers import AppClient, FakeArtifacts, settings_for


@pytest.fixture
def artifacts(tmp_path: Path) -> FakeArtifacts:
    fake = FakeArtifacts(tmp_path / "als")
    fake.publish("v1")
    return fake


@pytest.fixture
def client(artifacts: FakeArtifacts) -> Iterator[AppClient]:
    with AppClient(create_app(settings_for(artifacts), loader=artifacts)) as c:
        yield c
