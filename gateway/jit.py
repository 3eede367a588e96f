"""numba compilation shared by the frame kernels (correction, presentation)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numba

LOGGER = logging.getLogger(__name__)


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` compiled without the GIL, with numba's on-disk cache when it finds a writable place
    for it (a read-only install without one compiles once per process instead of failing at import)."""
    try:
        return numba.njit(nogil=True, cache=True, boundscheck=False)(fn)
    except RuntimeError as exc:
        LOGGER.info("numba cache unavailable (%s): compiling %s at start", exc, fn.__name__)
        return numba.njit(nogil=True, boundscheck=False)(fn)
