"""Keep glibc's malloc from handing large tensors back to the kernel after every step.

glibc serves allocations above its mmap threshold (128 KiB at start, raised dynamically up to
32 MiB) with fresh ``mmap`` pages and unmaps them on ``free``; a training step or a served batch
allocates the same multi-megabyte intermediates again and again, so each step paid page faults
and zeroing for all of them. Measured on the user tower's seen-set pooling (one thread, demo
history lengths, batch 1,024): 117 ms per forward with glibc's defaults, 40 ms with the
thresholds below. Raising the mmap and trim thresholds makes freed blocks stay in the heap for
the next step; the cost is that the process keeps up to ``limit`` bytes of freed memory.

``triton_models/two_tower/model.py`` does the same in its own lines (it imports nothing from
this package, see its docstring).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
DEFAULT_LIMIT = 1 << 30  # 1 GiB


def keep_freed_memory(limit: int = DEFAULT_LIMIT) -> bool:
    """Serve allocations up to ``limit`` bytes from the heap and trim it only above ``limit``.

    True when glibc took both settings; False (and nothing changed) on another C library."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:
        logger.debug("no mallopt in this C library: allocator left as it is")
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, limit)) and bool(mallopt(M_TRIM_THRESHOLD, limit))
