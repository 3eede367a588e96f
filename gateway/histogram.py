"""Order statistics of uint16 frames from their histogram: one counting pass, no sort."""

from __future__ import annotations

import numpy as np


def percentiles_u16(a: np.ndarray, qs: tuple[float, ...], of: np.ndarray | None = None) -> tuple[float, ...]:
    """np.percentile(a, qs) (its default linear method) of a uint16 array, exactly, from the
    histogram: one counting pass instead of a partition (6 ms -> 1 ms on 590,000 pixels).
    With `of` (a table of 65536 values), the percentiles of of[a] when `of` is increasing:
    the same order statistics, interpolated between their values in the table."""
    cum = np.cumsum(np.bincount(a.reshape(-1), minlength=1 << 16))
    n = int(cum[-1])
    if n == 0:
        raise ValueError("percentiles of an empty array")
    out = []
    for q in qs:
        h = (n - 1) * q / 100.0
        lo = int(np.floor(h))
        below, above = np.searchsorted(cum, [lo, min(lo + 1, n - 1)], side="right")
        x, y = (float(below), float(above)) if of is None else (float(of[below]), float(of[above]))
        out.append(x + (h - lo) * (y - x))
    return tuple(out)
