"""IEC 62494-1 exposure index of a corrected frame: EI = 100 x air kerma (uGy).

The air kerma is estimated from the median of the central 50 % x 50 % of the frame (pixels
at zero or full scale excluded) divided by the calibration's counts per uGy. A generic
stand-in for the anatomy-specific value of interest region that the standard leaves to
the manufacturer.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from gateway.errors import CalibrationError, ConfigError
from gateway.types import CorrectedFrame, ExposureIndex

LOGGER = logging.getLogger(__name__)

CENTRAL_FRACTION = 0.5  # side of the central region, as a fraction of the frame's side


def exposure_index(frame: CorrectedFrame, target_ei: float) -> ExposureIndex:
    """EI from the central region, and DI = 10 log10(EI / EI_T)."""
    if not (math.isfinite(target_ei) and target_ei > 0):
        raise ConfigError(f"target exposure index must be positive, got {target_ei}")
    if not (math.isfinite(frame.counts_per_ugy) and frame.counts_per_ugy > 0):
        raise CalibrationError(
            f"frame {frame.meta.frame_number}: calibration {frame.calibration_id!r} gives no detector "
            f"sensitivity (counts_per_ugy {frame.counts_per_ugy}); cannot compute an exposure index")
    rows, cols = frame.pixels.shape
    r0, c0 = int(rows * (1 - CENTRAL_FRACTION) / 2), int(cols * (1 - CENTRAL_FRACTION) / 2)
    centre = frame.pixels[r0:rows - r0, c0:cols - c0]
    full_scale = (1 << frame.meta.bits_stored) - 1
    median = median_between(centre, 0, full_scale)
    if median is None:
        raise CalibrationError(
            f"frame {frame.meta.frame_number}: central region is all zero or saturated; no exposure index")
    kerma_ugy = median / frame.counts_per_ugy
    ei = 100.0 * kerma_ugy  # > 0: only pixels above zero were kept
    return ExposureIndex(ei=ei, target_ei=float(target_ei), deviation_index=10.0 * math.log10(ei / target_ei))


def median_between(pixels: np.ndarray, low: int, high: int) -> float | None:
    """np.median of the uint16 values strictly between `low` and `high`, from their histogram (one
    pass, no sort: a few ms on a full-size frame); None when there is none."""
    counts = np.bincount(pixels.reshape(-1), minlength=1 << 16)
    counts[:low + 1] = 0
    counts[high:] = 0
    cum = np.cumsum(counts)
    n = int(cum[-1])
    if n == 0:
        return None
    below, above = np.searchsorted(cum, [(n - 1) // 2, n // 2], side="right")
    return (int(below) + int(above)) / 2
