"""The correction maps as the Corrector keeps them in memory: uint16 fixed point where it is exact enough.

A 3072 x 3072 set holds two float32 maps (75 MB); as uint16 they take half that and the
correction reads half the bytes. Only good pixels count when the scales are chosen: a
defective pixel's corrected value is replaced by the repair from good neighbours.

- gain = q * gain_step + gain_base, spanning the good pixels' gains in 65535 steps (a
  per-set scale); kept as float32 instead when half a step is more than
  MAX_GAIN_RELATIVE_ERROR of the smallest good gain (gains spread over more than 1:5).
- offset = q * 2**-bits + base, base an integer below the smallest good offset, `bits` as
  many fractional bits as the good offsets' range leaves room for (at most MAX_OFFSET_BITS);
  kept as float32 when fewer than MIN_OFFSET_BITS fit (a range over 16383 counts).

A multi-point response (CompactResponse) is kept the same way: each level's knots as the offset
(at least one fractional bit), each segment's slope as the gain; the slopes are divided out here,
once, so that the kernel multiplies only.

The rounding error is then at most 2**-(bits+1) counts of offset (1/512 to 1/8) and a relative
1.5e-5 of gain (a typical panel: 5e-6): at full scale a fraction of a count, which moves some
pixels by one count when rounded; the gain map's own statistical error (16 flats) is ~1 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gateway.errors import CalibrationError

MAX_OFFSET_BITS = 8
MIN_OFFSET_BITS = 2
KNOT_MIN_BITS = 1  # a multi-point knot spans up to 32767 counts in fixed point (error <= 1/4 count)
MAX_GAIN_RELATIVE_ERROR = 2.0 ** -15  # half a step, relative to the smallest good gain
_TOP = 65535


@dataclass(frozen=True, eq=False)
class CompactMaps:
    """Offset and gain as the kernel reads them: offset = offset_q * offset_step + offset_base,
    gain = gain_q * gain_step + gain_base (float32 maps: step 1, base 0, where fixed point would lose)."""

    offset_q: np.ndarray  # uint16 or float32
    offset_step: float
    offset_base: float
    gain_q: np.ndarray  # uint16 or float32
    gain_step: float
    gain_base: float

    @property
    def nbytes(self) -> int:
        return int(self.offset_q.nbytes + self.gain_q.nbytes)

    def offset(self) -> np.ndarray:
        """The offset map as float32 (a new array)."""
        return (self.offset_q.astype(np.float32) * np.float32(self.offset_step)
                + np.float32(self.offset_base)).astype(np.float32)

    def gain(self) -> np.ndarray:
        """The gain map as float32 (a new array)."""
        return (self.gain_q.astype(np.float32) * np.float32(self.gain_step)
                + np.float32(self.gain_base)).astype(np.float32)


def compact(offset: np.ndarray, gain: np.ndarray, good: np.ndarray) -> CompactMaps:
    """The compact form of float32 offset and gain maps; `good` marks the pixels that count."""
    if not good.any():
        raise CalibrationError("no good pixel: nothing to correct")
    o_q, o_step, o_base = _offset(offset, good)
    g_q, g_step, g_base = _gain(gain, good)
    for arr in (o_q, g_q):
        arr.flags.writeable = False
    return CompactMaps(offset_q=o_q, offset_step=o_step, offset_base=o_base, gain_q=g_q, gain_step=g_step,
                       gain_base=g_base)


def _offset(offset: np.ndarray, good: np.ndarray, min_bits: int = MIN_OFFSET_BITS) -> tuple[np.ndarray, float, float]:
    g = offset[good]
    lo, hi = float(g.min()), float(g.max())
    base = math.floor(lo)
    span = hi - base
    bits = MAX_OFFSET_BITS if span <= 0 else min(MAX_OFFSET_BITS, math.floor(math.log2(_TOP / span)))
    if bits < min_bits or base < -(1 << 24) or base > (1 << 24):
        return np.ascontiguousarray(offset, np.float32).copy(), 1.0, 0.0
    step = 2.0 ** -bits
    q = np.empty(offset.shape, np.float32)
    np.subtract(offset, np.float32(base), out=q)
    q *= np.float32(1 << bits)
    np.rint(q, out=q)
    np.clip(q, 0, _TOP, out=q)  # only defective pixels lie outside the good pixels' range
    return q.astype(np.uint16), step, float(base)


def _gain(gain: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, float, float]:
    g = gain[good]
    lo, hi = float(g.min()), float(g.max())
    base = float(np.float32(lo))
    step = float(np.float32(max(hi - base, 1e-30) / _TOP))
    if lo <= 0 or step / 2 / lo > MAX_GAIN_RELATIVE_ERROR:
        return np.ascontiguousarray(gain, np.float32).copy(), 1.0, 0.0
    q = np.empty(gain.shape, np.float32)
    np.subtract(gain, np.float32(base), out=q)
    q /= np.float32(step)
    np.rint(q, out=q)
    np.clip(q, 0, _TOP, out=q)
    return q.astype(np.uint16), step, base


@dataclass(frozen=True, eq=False)
class CompactResponse:
    """A multi-point gain as the kernel reads it: per level j, knot = knots_q[j] * knot_step[j] +
    knot_base[j]; slopes[0] is the line through zero below the first knot (target 0 / knot 0),
    slopes[j + 1] the segment from knot j to knot j + 1 (the last one extended); each level's
    slope = slopes_q[j] * slope_step[j] + slope_base[j]. uint16 where fixed point is exact
    enough (as the offset and gain maps), float32 otherwise; every division done here, once."""

    knots_q: np.ndarray  # (levels, rows, columns)
    knot_step: np.ndarray  # float32 (levels,)
    knot_base: np.ndarray
    slopes_q: np.ndarray  # (levels, rows, columns)
    slope_step: np.ndarray
    slope_base: np.ndarray
    targets: np.ndarray  # float32 (levels,)

    @property
    def nbytes(self) -> int:
        return int(self.knots_q.nbytes + self.slopes_q.nbytes)


def compact_response(knots: np.ndarray, targets: tuple[float, ...], good: np.ndarray) -> CompactResponse:
    """The compact form of a multi-point response (knots as CalibrationSet.response)."""
    levels = knots.shape[0]
    t = np.asarray(targets, np.float32)
    slopes = np.empty_like(knots)
    np.divide(t[0], knots[0], out=slopes[0])
    for j in range(levels - 1):
        np.subtract(knots[j + 1], knots[j], out=slopes[j + 1])
        np.divide(t[j + 1] - t[j], slopes[j + 1], out=slopes[j + 1])
    # Knots to half a count at least (a knot off by d moves the corrected value by d times a slope ~1).
    k_q, k_step, k_base = _levels([_offset(knots[j], good, KNOT_MIN_BITS) for j in range(levels)], knots)
    m_q, m_step, m_base = _levels([_gain(slopes[j], good) for j in range(levels)], slopes)
    return CompactResponse(knots_q=k_q, knot_step=k_step, knot_base=k_base, slopes_q=m_q, slope_step=m_step,
                           slope_base=m_base, targets=t)


def _levels(per_level: list[tuple[np.ndarray, float, float]],
            exact: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The levels stacked as uint16 with their steps and bases; float32 (step 1, base 0) for all
    when one level would lose in fixed point."""
    n = len(per_level)
    if all(q.dtype == np.uint16 for q, _, _ in per_level):
        q = np.stack([q for q, _, _ in per_level])
        steps = np.array([s for _, s, _ in per_level], np.float32)
        bases = np.array([b for _, _, b in per_level], np.float32)
    else:
        q, steps, bases = np.ascontiguousarray(exact, np.float32), np.ones(n, np.float32), np.zeros(n, np.float32)
    q.flags.writeable = False
    return q, steps, bases
