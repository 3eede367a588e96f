"""Apply a CalibrationSet to raw frames: (raw - offset) * gain, saturation kept, clip, defect repair.

One fused pass (numba, compiled once and cached) reads the raw frame and the two float32 maps
and writes the uint16 frame; the defect repair then walks a table computed when the Corrector
is made. With `out=` nothing is allocated per frame.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from gateway.correction.calibration_set import CalibrationSet
from gateway.correction.repair import MAX_REPAIR_RADIUS, repair_tables
from gateway.errors import CalibrationError
from gateway.types import CorrectedFrame, RawFrame

LOGGER = logging.getLogger(__name__)

__all__ = ["MAX_REPAIR_RADIUS", "Corrector", "repair_tables"]


def _jit(fn: Callable[..., None]) -> Callable[..., None]:
    """Compiled, with numba's on-disk cache when it finds a writable place for it (a read-only
    install without one compiles once per process instead of failing at import)."""
    try:
        return numba.njit(nogil=True, cache=True, boundscheck=False)(fn)
    except RuntimeError as exc:
        LOGGER.info("numba cache unavailable (%s): compiling %s at start", exc, fn.__name__)
        return numba.njit(nogil=True, boundscheck=False)(fn)


@_jit
def _correct_rows(raw: np.ndarray, offset: np.ndarray, gain: np.ndarray, full_scale: int,
                  r0: int, r1: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    top = np.float32(full_scale)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    for y in range(r0, r1):
        r, o, g, d = raw[y], offset[y], gain[y], out[y]
        for x in range(r.size):
            v = r[x]
            c = (np.float32(v) - o[x]) * g[x] + half  # rounds half up once clipped to [0, full scale]
            c = min(max(c, zero), top)
            # A saturated raw pixel has lost its signal: it stays saturated, never a plausible value
            # after gain (the exposure index and the viewer must see it as clipped).
            d[x] = np.uint16(top if v >= full_scale else c)


@_jit
def _repair(flat: np.ndarray, index: np.ndarray, neighbours: np.ndarray,
            weights: np.ndarray) -> None:  # pragma: no cover - compiled
    for i in range(index.size):
        acc = np.float32(0.0)
        for j in range(neighbours.shape[1]):
            acc += np.float32(flat[neighbours[i, j]]) * weights[i, j]
        flat[index[i]] = np.uint16(acc + np.float32(0.5))


class Corrector:
    """Corrects frames of one detector serial and mode with one calibration set.

    The frame is split into `threads` bands of rows corrected at once (the kernel releases the
    GIL); the defect repair runs after all bands, as it reads corrected neighbours. A lock
    serialises apply(), so one Corrector may be shared between threads (one frame at a time).
    A frame whose temperature differs from the calibration's by more than
    warn_temperature_delta_c is corrected, with a warning: the offset drifts with temperature.
    """

    def __init__(self, cal: CalibrationSet, *, warn_temperature_delta_c: float = 5.0,
                 threads: int | None = None) -> None:
        self.cal = cal
        self.warn_temperature_delta_c = warn_temperature_delta_c
        self._offset = np.ascontiguousarray(cal.offset)
        self._gain = np.ascontiguousarray(cal.gain)
        self._defect_index, self._neighbour_index, self._neighbour_weight = repair_tables(cal.defects)
        self._history = (f"offset:{cal.calibration_id}", f"gain:{cal.calibration_id}",
                         f"defects:{self._defect_index.size} repaired")
        self._threads = max(1, min(threads or min(2, os.cpu_count() or 1), cal.shape[0]))
        rows = cal.shape[0]
        self._bands = [(rows * i // self._threads, rows * (i + 1) // self._threads) for i in range(self._threads)]
        self._pool = (ThreadPoolExecutor(self._threads - 1, thread_name_prefix="correct")
                      if self._threads > 1 else None)
        self._lock = threading.Lock()
        _warm_up()

    def apply(self, raw: RawFrame, *, out: np.ndarray | None = None) -> CorrectedFrame:
        """The corrected frame (uint16, clipped to the frame's bits stored), with its history.

        `out`, a C-contiguous uint16 array of the frame's shape, receives the pixels (the
        returned frame holds a read-only view of it); by default a new array is allocated.
        """
        self._check(raw)
        if out is None:
            out = np.empty(self.cal.shape, np.uint16)
        elif out.dtype != np.uint16 or out.shape != self.cal.shape or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint16 array of shape {self.cal.shape}, got "
                             f"{out.dtype}{out.shape}")
        pixels = raw.pixels if raw.pixels.flags.c_contiguous else np.ascontiguousarray(raw.pixels)
        full_scale = (1 << raw.meta.bits_stored) - 1
        with self._lock:
            pending = [self._pool.submit(_correct_rows, pixels, self._offset, self._gain, full_scale, r0, r1, out)
                       for r0, r1 in self._bands[1:]] if self._pool is not None else []
            r0, r1 = self._bands[0]
            _correct_rows(pixels, self._offset, self._gain, full_scale, r0, r1, out)
            for job in pending:
                job.result()
            if self._defect_index.size:
                _repair(out.reshape(-1), self._defect_index, self._neighbour_index, self._neighbour_weight)
        return CorrectedFrame(
            pixels=out.view(),
            meta=raw.meta,
            calibration_id=self.cal.calibration_id,
            calibrated_at=self.cal.created_at,
            counts_per_ugy=self.cal.counts_per_ugy,
            history=self._history,
        )

    def _check(self, raw: RawFrame) -> None:
        m, key = raw.meta, self.cal.key
        if (m.detector_serial, m.mode) != (key.detector_serial, key.mode):
            raise CalibrationError(
                f"frame {m.frame_number} is from detector {m.detector_serial} mode {m.mode}, but calibration "
                f"{self.cal.calibration_id} is for detector {key.detector_serial} mode {key.mode}")
        if (m.rows, m.columns) != self.cal.shape:
            raise CalibrationError(
                f"frame {m.frame_number} is {m.rows}x{m.columns} pixels, calibration {self.cal.calibration_id} "
                f"is {self.cal.shape[0]}x{self.cal.shape[1]}")
        if abs(m.temperature_c - self.cal.temperature_c) > self.warn_temperature_delta_c:
            LOGGER.warning("frame %d at %.1f C, calibration %s made at %.1f C: offset may have drifted",
                           m.frame_number, m.temperature_c, self.cal.calibration_id, self.cal.temperature_c)


def _warm_up() -> None:
    """Compile (or load from numba's cache) both kernels now, not on the first clinical frame."""
    raw = np.zeros((2, 2), np.uint16)
    maps = np.zeros((2, 2), np.float32)
    raw.flags.writeable = maps.flags.writeable = False  # frames and maps are read-only: their own signature
    out = np.zeros((2, 2), np.uint16)
    _correct_rows(raw, maps, maps, 0xFFFF, 0, 2, out)
    _correct_rows(out, maps, maps, 0xFFFF, 0, 2, out)
    _repair(out.reshape(-1), np.zeros(1, np.intp), np.zeros((1, 1), np.intp), np.zeros((1, 1), np.float32))
