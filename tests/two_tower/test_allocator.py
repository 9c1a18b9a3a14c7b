"""Once training or the Triton model asked glibc to keep freed memory, a large tensor comes from
the heap (reused step after step) instead of its own ``mmap`` (unmapped on free, faulted in and
zeroed again by the next step)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# Allocates a 64 MiB array and reports the bytes glibc holds in separately mmapped blocks while
# it lives (mallinfo2's hblkhd), with glibc's defaults or after keep_freed_memory().
PROBE = """
import ctypes, json, sys
import numpy as np
from two_tower.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
took = keep_freed_memory() if sys.argv[1] == "keep" else None
block = np.ones(16 * 1024 * 1024, dtype=np.float32)  # 64 MiB
print(json.dumps({"took": took, "mmapped": libc.mallinfo2().hblkhd}))
"""


def _probe(mode: str) -> dict[str, int | bool | None]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, int | bool | None] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_large_tensor_comes_from_the_heap_once_asked() -> None:
    default, kept = _probe("default"), _probe("keep")
    block = 64 * 1024 * 1024
    assert int(default["mmapped"] or 0) >= block  # glibc's default: its own mapping
    assert kept["took"] is True
    assert int(kept["mmapped"] or 0) < block  # from the heap, kept there after free
