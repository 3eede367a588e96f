"""Checks on the frames of a calibration, each with what the engineer should do about it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from gateway.errors import CalibrationError
from gateway.types import RawFrame

MAX_SATURATED_FRACTION = 0.01  # of a flat's pixels at full scale: the flat is saturated
MIN_SIGNAL_NOISE_RATIO = 20.0  # median flat signal / median dark SD below this: no signal
FLAT_AGREEMENT = 0.2  # each flat's median signal within this fraction of the first flat's
UNIFORMITY_BLOCKS = 32  # a flat is cut into 32 x 32 blocks for the object-in-beam check


@dataclass(frozen=True)
class CalibrationLimits:
    """Acceptance limits on the frames of a calibration (configured in [calibration.limits])."""

    dark_mean_max: float = 16000.0  # counts: a higher mean dark level is light or a broken panel
    dark_sd_max: float = 40.0  # counts: median per-pixel dark noise above this is light or interference
    dark_frame_spread: float = 20.0  # counts: a dark frame whose mean lies this far above the darks' median saw light
    flat_median_min: float = 500.0  # counts above offset: less is too little dose for a gain map
    flat_median_max: float = 45000.0  # counts above offset: more leaves no headroom before saturation
    flat_local_nonuniformity: float = 0.05  # a block of a flat this far from its neighbours: object in the beam


def check_darks(frame_numbers: Sequence[int], frame_levels: Sequence[float], offset: np.ndarray, median_sd: float,
                limits: CalibrationLimits) -> None:
    """CalibrationError when the darks show light: a frame brighter than the rest, a mean level
    or a noise above the limits."""
    typical = float(np.median(frame_levels))
    for number, m in zip(frame_numbers, frame_levels, strict=True):
        if m - typical > limits.dark_frame_spread:
            raise CalibrationError(
                f"dark frame {number} is {m - typical:.1f} counts brighter than the other darks (limit "
                f"{limits.dark_frame_spread:g}): light reached the panel. Make sure the tube is off and the room "
                "light cannot reach the detector, then repeat the dark frames")
    level = float(np.median(offset[::4, ::4]))
    if level > limits.dark_mean_max:
        raise CalibrationError(
            f"dark frames read {level:.0f} counts (limit {limits.dark_mean_max:g}): light on the panel or a "
            "faulty detector. Switch the beam off and repeat the dark frames")
    if median_sd > limits.dark_sd_max:
        raise CalibrationError(
            f"dark frames are noisy: median pixel SD {median_sd:.1f} counts (limit {limits.dark_sd_max:g}): light "
            "varying between frames or electrical interference. Switch the beam off and repeat the dark frames")


def check_flat(flat: RawFrame, offset: np.ndarray, median_sd: float, full_scale: float,
               limits: CalibrationLimits, *, first_median: float | None = None) -> float:
    """Check one flat before it is used; its median signal (counts above offset).

    CalibrationError, saying to repeat the flat, when it is saturated, has no signal, lies
    outside the count window or shows an object in the beam (a block of the field far from
    its neighbours: limits.flat_local_nonuniformity).
    """
    n = flat.meta.frame_number
    check_saturation(flat, full_scale)
    step = max(1, flat.meta.rows // 512)
    sub = flat.pixels[::step, ::step] - offset[::step, ::step]
    median = float(np.median(sub))
    check_signal(median, median_sd)
    if first_median is not None and abs(median - first_median) > FLAT_AGREEMENT * first_median:
        raise CalibrationError(
            f"flat-field frame {n} has a median signal of {median:.0f} counts, the first flat {first_median:.0f}: "
            "flats must be taken at one technique (generator misfire?); repeat this flat")
    if not limits.flat_median_min <= median <= limits.flat_median_max:
        raise CalibrationError(
            f"flat-field frame {n}: median signal {median:.0f} counts above offset, outside the window "
            f"{limits.flat_median_min:g}..{limits.flat_median_max:g}: adjust the mAs "
            f"({'more' if median < limits.flat_median_min else 'less'}) and repeat this flat")
    if min(sub.shape) < 3 * UNIFORMITY_BLOCKS:
        return median
    rows, cols = (d - d % UNIFORMITY_BLOCKS for d in sub.shape)
    b = UNIFORMITY_BLOCKS
    blocks = np.median(sub[:rows, :cols].reshape(b, rows // b, b, cols // b).transpose(0, 2, 1, 3)
                       .reshape(b, b, -1), axis=2).astype(np.float32)
    around = cv2.medianBlur(blocks, 3)[1:-1, 1:-1]
    dev = np.abs(blocks[1:-1, 1:-1] / np.maximum(around, 1e-6) - 1)
    worst = np.unravel_index(int(np.argmax(dev)), dev.shape)
    if dev[worst] > limits.flat_local_nonuniformity:
        y = int((worst[0] + 1.5) * rows / b * step)
        x = int((worst[1] + 1.5) * cols / b * step)
        raise CalibrationError(
            f"flat-field frame {n}: the field near row {y}, column {x} differs by {100 * float(dev[worst]):.0f} % "
            f"from its surroundings (limit {100 * limits.flat_local_nonuniformity:g} %): an object in the beam? "
            "Remove everything between tube and detector and repeat this flat")
    return median


def check_saturation(f: RawFrame, full_scale: float) -> None:
    saturated = np.count_nonzero(f.pixels >= full_scale) / f.pixels.size
    if saturated > MAX_SATURATED_FRACTION:
        raise CalibrationError(
            f"flat-field frame {f.meta.frame_number} is saturated ({100 * saturated:.1f} % of pixels at full "
            f"scale {full_scale:.0f}): lower the dose (mAs) and repeat")


def check_signal(median_signal: float, median_sd: float) -> None:
    """CalibrationError when the flats' signal is lost in the dark noise (beam off)."""
    need = max(MIN_SIGNAL_NOISE_RATIO * median_sd, 1.0)
    if median_signal < need:
        raise CalibrationError(
            f"flat-field frames show no X-ray signal: median {median_signal:.1f} counts above offset, need at "
            f"least {need:.1f} ({MIN_SIGNAL_NOISE_RATIO:.0f}x the dark noise): was the beam on?")

