"""Errors raised while loading data. Both are ``ValueError``: the input is wrong, not the code."""

from __future__ import annotations

from pathlib import Path


class DataSourceError(ValueError):
    """A data spec cannot be used: unknown kind, missing path, no rows left, unknown name."""


class DataFormatError(DataSourceError):
    """A data file is malformed. The message names the file, the 1-based line and the problem."""

    def __init__(self, path: Path | str, line: int, problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        super().__init__(f"{self.path}, line {line}: {problem}")
