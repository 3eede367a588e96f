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
from collections.abc import Iterable

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



MADV_DONTNEED = 4
COMPILER_LIBRARIES = ("libllvmlite",)


def release_compiler_pages(libraries: tuple[str, ...] = COMPILER_LIBRARIES) -> int:
    """Give back the resident pages of the compiler's library (LLVM: about 80 MB of code).

    numba needs LLVM only to compile a kernel or load it from its cache; the kernels run from
    memory of their own. Once they are loaded, LLVM's pages are clean pages of the library file
    that only inflate RSS. MADV_DONTNEED drops them from this process; a later compile faults
    them back in from the file. Only read-only mappings without a private or anonymous page
    are touched (those can hold nothing the file does not), so nothing can be lost. Returns
    the resident bytes released; 0 where this is not Linux. Cheap enough to call often."""
    try:
        with open("/proc/self/smaps", encoding="ascii", errors="replace") as smaps:
            mappings = _library_mappings(smaps, libraries)
    except OSError:
        return 0
    name = ctypes.util.find_library("c")
    if not mappings or not name:
        return 0
    madvise = ctypes.CDLL(name, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    released = 0
    for start, end, resident in mappings:
        if resident and madvise(start, end - start, MADV_DONTNEED) == 0:
            released += resident
    return released


def _library_mappings(smaps: Iterable[str], libraries: tuple[str, ...]) -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of each read-only mapping of `libraries` whose every page is
    a clean page of the file (no private dirty, no anonymous page)."""
    found: list[tuple[int, int, int]] = []
    current: dict[str, int] | None = None
    span = (0, 0)
    for line in smaps:
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):  # a mapping's header line
            fields = rest.split()
            if current is not None:
                _keep(found, span, current)
            ours = len(fields) >= 5 and "w" not in fields[0] and any(lib in fields[4] for lib in libraries)
            current = {} if ours else None
            lo, hi = head.split("-")
            span = (int(lo, 16), int(hi, 16))
        elif current is not None and head.endswith(":") and rest.split()[:1] and rest.split()[0].isdigit():
            current[head[:-1]] = int(rest.split()[0]) * 1024
    if current is not None:
        _keep(found, span, current)
    return found


def _keep(found: list[tuple[int, int, int]], span: tuple[int, int], stats: dict[str, int]) -> None:
    if stats.get("Private_Dirty", 1) == 0 and stats.get("Shared_Dirty", 1) == 0 and stats.get("Anonymous", 1) == 0:
        found.append((span[0], span[1], stats.get("Rss", 0)))
