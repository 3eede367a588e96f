"""numba compilation shared by the frame kernels (presentation).

numba itself (about 0.2 s to import) is loaded at a kernel's first call, not at start-up: the
daemon calls the kernels once after READY (presentation.warm_up), so the first clinical frame
finds them compiled, and READY is not held up by a compiler it does not need yet.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

LOGGER = logging.getLogger(__name__)


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, compiled at its first call without the GIL, with numba's on-disk cache when it finds
    a writable place for it (a read-only install without one compiles once per process instead
    of failing)."""
    lock = threading.Lock()
    kernel: Callable[..., Any] | None = None

    def build() -> Callable[..., Any]:
        nonlocal kernel
        with lock:  # two threads calling first compile once
            if kernel is None:
                import numba  # noqa: PLC0415 - deferred on purpose (see the module docstring)

                try:
                    kernel = numba.njit(nogil=True, cache=True, boundscheck=False)(fn)
                except RuntimeError as exc:
                    LOGGER.info("numba cache unavailable (%s): compiling %s in memory", exc, fn.__name__)
                    kernel = numba.njit(nogil=True, boundscheck=False)(fn)
            return kernel

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        return (kernel or build())(*args)

    return call
