"""Keep the daemon's resident memory flat across thousands of full-size frames.

Each exposure passes 18-37 MB buffers (raw frame, corrected frame, float32 presentation
temporaries, the encoded object) through several threads. glibc's malloc raises its mmap
threshold after each large free (up to 32 MB) and gives every thread an arena of its own, so
such buffers end up in heaps that are never returned: RSS climbs by hundreds of MB. A fixed
1 MiB mmap threshold (which also turns the dynamic raise off) returns every frame-sized buffer
to the system on free, and two arenas bound the per-thread heaps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

LOGGER = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int = 1 << 20, trim_threshold: int = 4 << 20, arenas: int = 2) -> bool:
    """Apply the settings (glibc only); False where they cannot be (another libc), never an error."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in
             ((M_MMAP_THRESHOLD, mmap_threshold), (M_TRIM_THRESHOLD, trim_threshold), (M_ARENA_MAX, arenas)))
    if not ok:
        LOGGER.info("malloc tuning not applied: this libc refused mallopt")
    return ok
