"""The collimated field, found in a corrected frame: the rectangle of primary beam, with only
scatter (low, uniform, no structure) outside it. The panel does not report the collimator's
blades, so the field is read from the pixels (docs/simulator.md, Collimation).

Two steps. Coarse, on every 4th pixel in each direction: a pixel is lit when, after a 3x3
median (single noisy pixels gone, the blades' step edges kept), it is above the geometric mean
of the frame's dark (2nd percentile) and bright (98th percentile) levels; the field spans the
columns and rows with enough lit pixels. Fine (full size): outside that box is scatter, whose
level and noise are measured there; a column belongs to the field when its mean over the
field's rows stands clear of the scatter (and a row likewise over the field's columns) by more
than the noise and more than a quarter of the field's own contrast (the panel spreads a little
signal past a blade). Averaging along the blade makes the fine step hold even where dense
anatomy at a low dose is barely brighter than the scatter.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gateway.histogram import percentiles_u16

DARK_PERCENTILE, BRIGHT_PERCENTILE = 2.0, 98.0
MIN_CONTRAST = 1.5  # bright / dark below this: no field and no scatter to tell apart (a uniform frame)
MIN_LIT_FRACTION = 0.02  # of a column's (row's) pixels, for it to belong to the coarse field
SAMPLE_STEP = 4  # the coarse step works on every 4th pixel in each direction
COARSE_MARGIN = 8  # px: the coarse box is known to within a step; keep this far from its edges
MAX_SCATTER_SAMPLE = 1 << 16  # the scatter's two statistics need no more
MIN_SCATTER_PIXELS = 256  # fewer outside the coarse field: the coarse field stands
CLEAR_SIGMAS = 6.0  # a column's (row's) mean above the scatter by this many standard errors is in the field
EDGE_FRACTION = 0.25  # ... and by this fraction of the field's median level above the scatter


@dataclass(frozen=True)
class CollimatedField:
    """The field in pixels of the image: first row, end row, first column, end column (end exclusive)."""

    first_row: int
    end_row: int
    first_column: int
    end_column: int

    def dicom_edges(self) -> tuple[int, int, int, int]:
        """Collimator Left/Right Vertical Edge and Upper/Lower Horizontal Edge (PS3.3 C.8.7.3):
        the field's first and last column, first and last row, counted from 1 like every pixel
        address in DICOM."""
        return self.first_column + 1, self.end_column, self.first_row + 1, self.end_row


def detect_field(pixels: np.ndarray, min_signal: float) -> CollimatedField | None:
    """The collimated field of a corrected frame (higher value = more X-rays); the whole image
    when the collimator was open to the panel; None when the frame shows no beam: its bright
    level is below `min_signal` (counts; the DX builder gives those of 0.1 uGy)."""
    if pixels.ndim != 2 or pixels.size == 0:
        raise ValueError(f"a frame is a 2-D array, not {pixels.shape}")
    px = np.ascontiguousarray(pixels, dtype=np.uint16)
    rows, cols = px.shape
    small = np.ascontiguousarray(px[::SAMPLE_STEP, ::SAMPLE_STEP])  # the coarse step's copy: 16x fewer pixels
    dark, bright = percentiles_u16(small, (DARK_PERCENTILE, BRIGHT_PERCENTILE))
    if bright < min_signal or bright <= 0:
        return None  # no beam reached the panel: nothing to find
    floor = max(float(dark), min_signal, 1.0)  # the scatter level, or the least signal that is beam
    if bright < MIN_CONTRAST * floor:
        return CollimatedField(0, rows, 0, cols)  # uniform: open to the panel
    lit = cv2.medianBlur(small, 3) > np.sqrt(floor * float(bright))
    small_rows = _span(np.count_nonzero(lit, axis=1) >= MIN_LIT_FRACTION * lit.shape[1])
    small_cols = _span(np.count_nonzero(lit, axis=0) >= MIN_LIT_FRACTION * lit.shape[0])
    if small_rows is None or small_cols is None:
        return None
    # Back to full size; the coarse box is known to within a step, so the scatter is taken a
    # margin outside it and the profiles are averaged a margin inside it.
    r0, r1 = small_rows[0] * SAMPLE_STEP, min(rows, small_rows[1] * SAMPLE_STEP)
    c0, c1 = small_cols[0] * SAMPLE_STEP, min(cols, small_cols[1] * SAMPLE_STEP)
    m = COARSE_MARGIN // SAMPLE_STEP
    outside = np.ones(small.shape, bool)
    outside[max(0, small_rows[0] - m):small_rows[1] + m, max(0, small_cols[0] - m):small_cols[1] + m] = False
    scatter = small[outside]
    scatter = scatter[::max(1, scatter.size // MAX_SCATTER_SAMPLE)].astype(np.float64)
    if scatter.size < MIN_SCATTER_PIXELS:
        return CollimatedField(r0, r1, c0, c1)
    level = float(np.median(scatter))
    sigma = max(1.4826 * float(np.median(np.abs(scatter - level))), 1.0)  # robust standard deviation
    ir0, ir1 = (r0 + COARSE_MARGIN, r1 - COARSE_MARGIN) if r1 - r0 > 4 * COARSE_MARGIN else (r0, r1)
    ic0, ic1 = (c0 + COARSE_MARGIN, c1 - COARSE_MARGIN) if c1 - c0 > 4 * COARSE_MARGIN else (c0, c1)
    col_profile = cv2.reduce(px[ir0:ir1], 0, cv2.REDUCE_AVG, dtype=cv2.CV_64F).ravel()
    row_profile = px[:, ic0:ic1].sum(axis=1, dtype=np.uint32) / float(ic1 - ic0)  # (cv2 is slow along rows)
    fine_cols = _clear(col_profile, (c0, c1), level, sigma / np.sqrt(ir1 - ir0))
    fine_rows = _clear(row_profile, (r0, r1), level, sigma / np.sqrt(ic1 - ic0))
    if fine_rows is None or fine_cols is None:
        return CollimatedField(r0, r1, c0, c1)
    return CollimatedField(fine_rows[0], fine_rows[1], fine_cols[0], fine_cols[1])


def _clear(profile: np.ndarray, coarse: tuple[int, int], level: float, standard_error: float
           ) -> tuple[int, int] | None:
    """The span of a profile (means along the blades) standing clear of the scatter `level`: by
    CLEAR_SIGMAS standard errors (noise) and by EDGE_FRACTION of the field's own median level
    above the scatter (the little the panel spreads past a blade)."""
    inside = float(np.median(profile[coarse[0]:coarse[1]]))
    return _span(profile > level + max(CLEAR_SIGMAS * standard_error, EDGE_FRACTION * (inside - level)))


def _span(member: np.ndarray) -> tuple[int, int] | None:
    """First index and end (exclusive) of the True entries; None when there is none."""
    found = np.flatnonzero(member)
    return None if found.size == 0 else (int(found[0]), int(found[-1]) + 1)
