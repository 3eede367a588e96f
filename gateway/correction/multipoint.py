"""Multi-point gain: each pixel's response at three or more dose levels, corrected piecewise-linearly.

A single gain map is exact at the dose of its flats only: a pixel whose response bends a
little (scintillator, amplifier) is over- or under-corrected elsewhere. With flats at several
doses, each pixel's mean signal at each level is a knot; the corrected value of a signal
between two knots is interpolated linearly between the panel's mean signals at those levels
(below the first knot: through zero; above the last: the last segment extended). Defective
pixels get the panel's means as knots (a gain of 1): they are repaired from good neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gateway.correction.calibration_set import MIN_LEVELS
from gateway.errors import CalibrationError

__all__ = ["MIN_LEVELS", "correct", "response_levels"]


def response_levels(levels: Sequence[tuple[float, np.ndarray]],
                    good: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """(knots (levels, rows, columns) float32, the panel's mean signal per level) from
    (air kerma, mean flat signal above offset) per level, in any order."""
    if len(levels) < MIN_LEVELS:
        raise CalibrationError(f"multi-point gain needs flats at {MIN_LEVELS} or more dose levels, got {len(levels)}")
    ordered = sorted(levels, key=lambda lv: lv[0])
    kermas = [k for k, _ in ordered]
    if any(b <= a * 1.05 for a, b in zip(kermas, kermas[1:], strict=False)):
        raise CalibrationError(f"multi-point gain: dose levels {kermas} uGy must differ by more than 5 %")
    knots = np.empty((len(ordered), *good.shape), np.float32)
    targets = []
    for i, (_, signal) in enumerate(ordered):
        target = float(signal[good].mean(dtype=np.float64))
        targets.append(target)
        np.copyto(knots[i], signal)
        knots[i][~good] = np.float32(target)
    flat = ~(np.diff(knots, axis=0) > 0).all(axis=0) | ~(knots[0] > 0)
    if flat.any():
        y, x = (int(v[0]) for v in np.nonzero(flat))
        raise CalibrationError(f"multi-point gain: {int(flat.sum())} good pixels (first at row {y}, column {x}) do "
                               f"not respond more at higher dose across levels {kermas} uGy: check the flats' "
                               "techniques and repeat them")
    return knots, tuple(targets)


def correct(signal: np.ndarray, knots: np.ndarray, targets: Sequence[float]) -> np.ndarray:
    """The piecewise-linear correction of signals above offset (float64; the reference the
    compiled kernel is tested against, and QA's tool for noise-free frames)."""
    t = np.asarray(targets, np.float64)
    s = signal.astype(np.float64)
    k = knots.astype(np.float64)
    out = s * t[0] / k[0]  # below the first knot: through zero
    for i in range(len(t) - 1):
        last = i == len(t) - 2
        sel = s >= k[i] if last else (s >= k[i]) & (s < k[i + 1])
        seg = t[i] + (s - k[i]) * (t[i + 1] - t[i]) / (k[i + 1] - k[i])
        out = np.where(sel, seg, out)
    return out
