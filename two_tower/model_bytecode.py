"""Compile each model version's ``model.py`` before Triton imports it.

Triton's Python backend imports ``<model>/<N>/model.py``, and the import writes its bytecode
(``__pycache__/model.cpython-*.pyc``) into that version folder. A server in poll mode (``cascade
up``, the tests, the drills) sees the folder change and loads the model again about one poll later:
every model once after start, and every newly exported version once after it went live, each
time while it serves (measured in the benchmarks: duplicate backend stubs, a reload inside the
load). Written beforehand, the bytecode is current when the stub imports, nothing is written, and
the repository stays as Triton scanned it.

The stub runs this same Python (``two_tower.triton_server`` builds it against this interpreter),
so the cache tag matches.
"""

from __future__ import annotations

import py_compile
from pathlib import Path

TEMPLATE_NAME = "model.py"


def compile_version(version_dir: Path) -> None:
    """Write the bytecode of ``version_dir/model.py`` (a no-op without one)."""
    source = Path(version_dir) / TEMPLATE_NAME
    if source.is_file():
        py_compile.compile(str(source), doraise=True)


def compile_repository(repository: Path) -> None:
    """:func:`compile_version` for every numbered version of every model in ``repository``."""
    for version_dir in sorted(Path(repository).glob("*/[0-9]*")):
        if version_dir.is_dir() and version_dir.name.isdigit():
            compile_version(version_dir)
