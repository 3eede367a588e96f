"""Defect classification in ASTM E2597 practice, from the maps a calibration measured.

Single-pixel rules first (where they overlap: hot > dead > noisy > lag > over > under), then
lines (a run of a row or column, small gaps closed, at least LINE_MIN_LENGTH long and more than
LINE_FRACTION bad), then clusters (8-connected groups of two or more bad pixels outside lines).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from gateway.correction.calibration_set import DefectClass

LOGGER = logging.getLogger(__name__)

OVER_RATIO = 1.3  # x local median: over-responding
UNDER_RATIO = 0.6  # x local median: under-responding
DEAD_RATIO = 0.1  # x local median: no usable response
NOISY_SD_RATIO = 6.0  # x median dark-frame SD: noisy
HOT_OFFSET_FRACTION = 0.5  # offset above the median by this fraction of the flat signal: hot
LAG_EXCESS = 0.02  # signal left in the dark after a flat, above the panel's median lag, x the flat signal
LAG_NOISE_SIGMAS = 5.0  # ... and above this many SDs of the pixel's dark noise
LINE_FRACTION = 0.5  # a row or column run with more bad pixels than this is a line
LINE_MIN_LENGTH = 32  # pixels
LINE_GAP = 4  # good pixels between bad ones still joined into one run


@dataclass(frozen=True)
class Maps:
    """What a calibration measured, per pixel (float32 maps of one shape)."""

    offset: np.ndarray
    dark_sd: np.ndarray
    flat_mean: np.ndarray
    signal: np.ndarray  # flat_mean - offset
    local: np.ndarray  # local median of signal
    lag: np.ndarray | None  # mean dark-after-flat minus offset; None when not measured


def classify(m: Maps, *, full_scale: float) -> tuple[np.ndarray, dict[str, object]]:
    """The defect map (uint8 DefectClass codes) and a summary for provenance (lag, clusters)."""
    median_sd = float(np.median(m.dark_sd))
    median_signal = float(np.median(m.signal))
    # Full-size temporaries are made in place: a 1x1 map is 38 MB each.
    local = np.maximum(m.local, np.float32(1e-6))
    ratio = np.divide(m.signal, local)
    defects = np.zeros(m.signal.shape, np.uint8)
    defects[ratio < UNDER_RATIO] = DefectClass.UNDER
    defects[ratio > OVER_RATIO] = DefectClass.OVER
    dead = ratio < DEAD_RATIO
    del ratio
    summary: dict[str, object] = {}
    if m.lag is not None:
        lag_ratio = np.divide(m.lag, local, out=local)
        median_lag = float(np.median(lag_ratio[::2, ::2]))
        lagging = lag_ratio > median_lag + LAG_EXCESS
        del lag_ratio
        noise = np.maximum(m.dark_sd, np.float32(median_sd))
        noise *= np.float32(LAG_NOISE_SIGMAS)
        lagging &= m.lag > noise
        del noise
        defects[lagging] = DefectClass.LAG
        del lagging
        summary["lag_median_fraction"] = median_lag
    else:
        LOGGER.warning("no dark frame after a flat: lag not measured")
        summary["lag_median_fraction"] = None
    if median_sd > 0:
        defects[m.dark_sd > NOISY_SD_RATIO * median_sd] = DefectClass.NOISY
    else:
        LOGGER.warning("dark frames show no noise at all; noisy-pixel detection skipped")
    del local
    defects[dead] = DefectClass.DEAD
    del dead
    hot = ((m.offset > float(np.median(m.offset[::2, ::2])) + HOT_OFFSET_FRACTION * median_signal)
           | (m.offset >= full_scale - 0.5) | (m.flat_mean >= full_scale - 0.5))
    defects[hot] = DefectClass.HOT
    bad = defects != DefectClass.GOOD
    line = lines(bad)
    defects[line] = DefectClass.LINE
    sizes = clusters(bad & ~line, defects)
    summary["clusters"] = {"count": len(sizes), "largest": max(sizes, default=0),
                           "sizes": {str(s): sizes.count(s) for s in sorted(set(sizes))}}
    summary["line_pixels"] = int(line.sum())
    return defects, summary


def lines(bad: np.ndarray) -> np.ndarray:
    """Pixels of row or column runs (gaps up to LINE_GAP closed) at least LINE_MIN_LENGTH long
    with more than LINE_FRACTION bad pixels: the run's good-looking pixels included. Only rows
    and columns with enough bad pixels to hold such a run are looked at (few, and small)."""
    out = np.zeros(bad.shape, bool)
    kernel = np.ones((1, LINE_GAP + 1), np.uint8)
    for axis in (1, 0):
        b = bad if axis == 1 else bad.T
        candidates = np.nonzero(np.count_nonzero(b, axis=1) > LINE_FRACTION * LINE_MIN_LENGTH)[0]
        if candidates.size == 0:
            continue
        sub = np.ascontiguousarray(b[candidates])
        closed = cv2.morphologyEx(sub.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
        found = _long_runs(closed, sub)
        if found.any():
            LOGGER.info("line defects along %s: %d pixels", "rows" if axis == 1 else "columns", int(found.sum()))
            target = out if axis == 1 else out.T
            target[candidates] |= found
    return out


def _long_runs(runs: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Runs along the last axis of `runs` that qualify as lines."""
    rows, cols = runs.shape
    padded = np.zeros((rows, cols + 1), bool)  # a separator closes every run at its row's end
    padded[:, :-1] = runs
    flat = padded.reshape(-1)
    starts = flat.copy()
    starts[1:] &= ~flat[:-1]
    run_id = np.cumsum(starts, dtype=np.int32)
    run_id[~flat] = 0
    length = np.bincount(run_id, minlength=1)
    ys, xs = np.nonzero(bad)  # few: counting them per run needs no full-size weights
    n_bad = np.bincount(run_id[ys * (cols + 1) + xs], minlength=length.size)
    is_line = (length >= LINE_MIN_LENGTH) & (n_bad > LINE_FRACTION * length)
    is_line[0] = False
    return np.asarray(is_line[run_id].reshape(rows, cols + 1)[:, :-1])


def clusters(bad: np.ndarray, defects: np.ndarray) -> list[int]:
    """Mark 8-connected groups of two or more bad pixels as CLUSTER in `defects`; their sizes."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bad.astype(np.uint8), connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA]
    grouped = area >= 2
    grouped[0] = False
    defects[grouped[labels]] = DefectClass.CLUSTER
    return sorted(int(a) for a in area[1:][grouped[1:]])
