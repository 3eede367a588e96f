"""Apply a CalibrationSet to raw frames: (raw - offset) * gain, saturation kept, clip, defect repair.

One fused pass (numba, compiled once and cached) reads the raw frame and the two maps and
writes the uint16 frame; the defect repair then walks a table computed when the Corrector is
made. With `out=` nothing is allocated per frame. The Corrector keeps the maps in their
compact form (gateway/correction/compact.py: uint16 fixed point where exact enough) and the
set's description, not its float32 maps: 38 MB instead of 85 MB for a 3072 x 3072 set.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gateway.correction.calibration_set import CalibrationInfo, CalibrationSet, DefectClass
from gateway.correction.compact import CompactMaps, CompactResponse, compact, compact_response
from gateway.correction.repair import MAX_REPAIR_RADIUS, repair_tables
from gateway.errors import CalibrationError
from gateway.jit import compiled
from gateway.types import CorrectedFrame, RawFrame

LOGGER = logging.getLogger(__name__)

__all__ = ["MAX_REPAIR_RADIUS", "Corrector", "repair_tables"]


@compiled
def _correct_rows(raw: np.ndarray, offset: np.ndarray, offset_step: float, offset_base: float, gain: np.ndarray,
                  gain_step: float, gain_base: float, full_scale: int, r0: int, r1: int,
                  out: np.ndarray) -> None:  # pragma: no cover - compiled
    top = np.float32(full_scale)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    o_step, o_base = np.float32(offset_step), np.float32(offset_base)
    g_step, g_base = np.float32(gain_step), np.float32(gain_base)
    for y in range(r0, r1):
        r, o, g, d = raw[y], offset[y], gain[y], out[y]
        for x in range(r.size):
            v = r[x]
            # Fixed point decoded exactly (float32 maps: step 1, base 0); rounds half up once clipped.
            c = (np.float32(v) - (np.float32(o[x]) * o_step + o_base)) * (np.float32(g[x]) * g_step + g_base) + half
            c = min(max(c, zero), top)
            # A saturated raw pixel has lost its signal: it stays saturated, never a plausible value
            # after gain (the exposure index and the viewer must see it as clipped).
            d[x] = np.uint16(top if v >= full_scale else c)


@compiled
def _correct_rows_multi(raw: np.ndarray, offset: np.ndarray, offset_step: float, offset_base: float,
                        knots: np.ndarray, knot_step: np.ndarray, knot_base: np.ndarray, slopes: np.ndarray,
                        slope_step: np.ndarray, slope_base: np.ndarray, targets: np.ndarray, full_scale: int,
                        r0: int, r1: int, out: np.ndarray, cor: np.ndarray) -> None:  # pragma: no cover - compiled
    """The multi-point form of _correct_rows (gateway/correction/compact.py: CompactResponse).

    Row by row, in passes without a branch or a division, so that the compiler vectorises them:
    the line through zero below the first knot, then each segment taking over from its knot on
    (the last one extended), then clip and write. `cor` is this band's own float32 row."""
    top = np.float32(full_scale)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    o_step, o_base = np.float32(offset_step), np.float32(offset_base)
    for y in range(r0, r1):
        r, o, d = raw[y], offset[y], out[y]
        kq, mq = knots[0, y], slopes[0, y]
        ks, kb, ms, mb, t = knot_step[0], knot_base[0], slope_step[0], slope_base[0], targets[0]
        for x in range(r.size):
            s = np.float32(r[x]) - (np.float32(o[x]) * o_step + o_base)
            cor[x] = t + (s - (np.float32(kq[x]) * ks + kb)) * (np.float32(mq[x]) * ms + mb)
        for j in range(knots.shape[0] - 1):
            kq, mq = knots[j, y], slopes[j + 1, y]
            ks, kb, ms, mb, t = knot_step[j], knot_base[j], slope_step[j + 1], slope_base[j + 1], targets[j]
            for x in range(r.size):
                s = np.float32(r[x]) - (np.float32(o[x]) * o_step + o_base)
                k = np.float32(kq[x]) * ks + kb
                c = t + (s - k) * (np.float32(mq[x]) * ms + mb)
                cor[x] = c if s >= k else cor[x]
        for x in range(r.size):
            c = min(max(cor[x] + half, zero), top)
            d[x] = np.uint16(top if r[x] >= full_scale else c)


@compiled
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
        self.cal: CalibrationInfo = cal.info  # not the set: its float32 maps are freed once it is dropped
        self.warn_temperature_delta_c = warn_temperature_delta_c
        self.maps: CompactMaps = compact(cal.offset, cal.gain, cal.defects == DefectClass.GOOD)
        # Multi-point gain: knots and slopes (compact too) replace the gain map, only when configured.
        self._response: CompactResponse | None = None
        if cal.response is not None:
            self._response = compact_response(cal.response, cal.response_targets, cal.defects == DefectClass.GOOD)
            self.maps = dataclasses.replace(self.maps, gain_q=np.zeros((0, 0), np.uint16))
        self._defect_index, self._neighbour_index, self._neighbour_weight = repair_tables(cal.defects)
        self._history = (f"offset:{cal.calibration_id}", f"gain:{cal.calibration_id}",
                         f"defects:{self._defect_index.size} repaired")
        self._threads = max(1, min(threads or min(2, os.cpu_count() or 1), cal.shape[0]))
        rows = cal.shape[0]
        self._bands = [(rows * i // self._threads, rows * (i + 1) // self._threads) for i in range(self._threads)]
        self._pool = (ThreadPoolExecutor(self._threads - 1, thread_name_prefix="correct")
                      if self._threads > 1 else None)
        self._lock = threading.Lock()
        self._scratch = (None if self._response is None
                         else np.empty((len(self._bands), cal.shape[1]), np.float32))  # a row per band
        _warm_up(self.maps, self._response)

    @property
    def resident_bytes(self) -> int:
        """Bytes of the arrays this corrector keeps: the compact maps and the repair tables."""
        knots = 0 if self._response is None else self._response.nbytes
        return self.maps.nbytes + knots + int(self._defect_index.nbytes + self._neighbour_index.nbytes
                                      + self._neighbour_weight.nbytes)

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
            m = self.maps
            kernel: Callable[..., None]
            rp = self._response
            if rp is None:
                kernel = _correct_rows
                args: tuple[object, ...] = (pixels, m.offset_q, m.offset_step, m.offset_base, m.gain_q, m.gain_step,
                                            m.gain_base, full_scale)
            else:
                kernel = _correct_rows_multi
                args = (pixels, m.offset_q, m.offset_step, m.offset_base, rp.knots_q, rp.knot_step, rp.knot_base,
                        rp.slopes_q, rp.slope_step, rp.slope_base, rp.targets, full_scale)
            extra = [() if self._scratch is None else (self._scratch[i],) for i in range(len(self._bands))]
            pending = [self._pool.submit(kernel, *args, r0, r1, out, *extra[i + 1])
                       for i, (r0, r1) in enumerate(self._bands[1:])] if self._pool is not None else []
            r0, r1 = self._bands[0]
            kernel(*args, r0, r1, out, *extra[0])
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


def _warm_up(maps: CompactMaps, response: CompactResponse | None) -> None:
    """Compile (or load from numba's cache) both kernels now, for these maps' types, not on
    the first clinical frame."""
    raw = np.zeros((2, 2), np.uint16)
    offset = np.zeros((2, 2), maps.offset_q.dtype)
    gain = np.zeros((2, 2), maps.gain_q.dtype)
    raw.flags.writeable = offset.flags.writeable = gain.flags.writeable = False  # read-only: their own signature
    out = np.zeros((2, 2), np.uint16)
    if response is not None:
        knots = np.zeros((3, 2, 2), response.knots_q.dtype)
        slopes = np.zeros((3, 2, 2), response.slopes_q.dtype)
        knots.flags.writeable = slopes.flags.writeable = False
        levels = np.ones(3, np.float32)
        row = np.empty(2, np.float32)
        for frame in (raw, out):
            _correct_rows_multi(frame, offset, 1.0, 0.0, knots, levels, levels, slopes, levels, levels, levels,
                                0xFFFF, 0, 2, out, row)
    else:
        _correct_rows(raw, offset, 1.0, 0.0, gain, 1.0, 0.0, 0xFFFF, 0, 2, out)
        _correct_rows(out, offset, 1.0, 0.0, gain, 1.0, 0.0, 0xFFFF, 0, 2, out)
    _repair(out.reshape(-1), np.zeros(1, np.intp), np.zeros((1, 1), np.intp), np.zeros((1, 1), np.float32))
