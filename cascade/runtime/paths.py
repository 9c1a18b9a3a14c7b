"""Where the offline pipeline keeps its files. One root (``CASCADE_HOME``, default ``var``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "var"


@dataclass(frozen=True)
class Layout:
    """Folders under the Cascade home. Nothing is created until a producer writes."""

    home: Path

    @classmethod
    def from_env(cls) -> Layout:
        return cls(home=Path(os.environ.get("CASCADE_HOME", DEFAULT_HOME)).resolve())

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    def dataset_dir(self, name: str) -> Path:
        return self.datasets_dir / name

    @property
    def feast_dir(self) -> Path:
        """Feast registry and the SQLite online store (when Redis is not configured)."""
        return self.home / "feast"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def run_dir(self) -> Path:
        """Logs and pid files of the local stack started by ``cascade up``."""
        return self.home / "run"
