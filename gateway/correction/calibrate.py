"""Make a CalibrationSet from dark and flat-field frames (offset, gain, defect maps).

Defects follow ASTM E2597 practice as DESIGN.md puts it. The 21x21 local median that the
over/under-responding rules compare against is approximated, so that it costs tens of
milliseconds on a 1536x1536 map instead of seconds: the map is cut into 7x7 tiles, each
tile replaced by its median, the 3x3 median of those tile medians (a 21x21 footprint)
taken with cv2.medianBlur, and the result interpolated bilinearly back to full size. The
detector's response varies smoothly over far more than 21 pixels and defects are sparse,
so a median of medians is as robust as the exact median for this purpose.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime

import cv2
import numpy as np

from gateway.correction.calibration_set import CalibrationSet, DefectClass, count_defects
from gateway.errors import CalibrationError
from gateway.types import CalibrationKey, FrameKind, RawFrame, Technique

LOGGER = logging.getLogger(__name__)

MIN_DARKS = 2
MIN_FLATS = 2
LOCAL_WINDOW = 21  # pixels, side of the local median neighbourhood
OVER_RATIO = 1.3  # x local median: over-responding
UNDER_RATIO = 0.6  # x local median: under-responding
DEAD_RATIO = 0.1  # x local median: no usable response
NOISY_SD_RATIO = 6.0  # x median dark-frame SD: noisy
HOT_OFFSET_FRACTION = 0.5  # offset above the median by this fraction of the flat signal: hot
LINE_FRACTION = 0.5  # a row or column with more bad pixels than this is a line defect
MAX_SATURATED_FRACTION = 0.01  # of a flat's pixels at full scale: the flat is saturated
MIN_SIGNAL_NOISE_RATIO = 20.0  # median flat signal / median dark SD below this: no signal
FLAT_AGREEMENT = 0.2  # each flat's median signal within this fraction of the others'
MAX_DEFECT_FRACTION = 0.05  # more defective pixels than this: refuse, something is wrong


def calibrate(darks: Sequence[RawFrame], flats: Sequence[RawFrame], *, flat_kerma_ugy: float,
              operator: str = "", technique: Technique | None = None,
              now: datetime | None = None) -> CalibrationSet:
    """Offset = mean of darks; gain from the mean flat minus offset; defects classified.

    Raises CalibrationError, naming the problem, for mixed serials/modes/geometries, frames
    of the wrong kind, too few frames, flats without signal or saturated flats.
    """
    if not (math.isfinite(flat_kerma_ugy) and flat_kerma_ugy > 0):
        raise CalibrationError(f"flat_kerma_ugy must be a positive air kerma in uGy, got {flat_kerma_ugy}")
    created_at = datetime.now(UTC) if now is None else now
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise CalibrationError(f"calibration time {created_at} has no time zone")
    created_at = created_at.astimezone(UTC)
    ref = _check_frames(darks, flats)
    full_scale = float((1 << ref.meta.bits_stored) - 1)
    shape = (ref.meta.rows, ref.meta.columns)

    offset, dark_sd = _mean_and_sd(darks)
    flat_mean = _mean(flats)
    signal = (flat_mean - offset).astype(np.float32)

    median_sd = float(np.median(dark_sd))
    median_signal = float(np.median(signal))
    _check_flats(flats, offset, median_signal, median_sd, full_scale)

    local = local_median(signal, LOCAL_WINDOW)
    defects = _classify(offset, dark_sd, flat_mean, signal, local, median_sd, median_signal, full_scale)
    n_bad = int(np.count_nonzero(defects))
    if n_bad > MAX_DEFECT_FRACTION * defects.size:
        raise CalibrationError(
            f"{n_bad} of {defects.size} pixels ({100 * n_bad / defects.size:.1f} %) classed defective, more than "
            f"{100 * MAX_DEFECT_FRACTION:.0f} %: check the flats (uniform open field?) and the panel")

    good = defects == DefectClass.GOOD
    mean_signal = float(signal[good].mean(dtype=np.float64))
    gain = np.ones(shape, np.float32)
    gain[good] = mean_signal / signal[good]

    offset32 = offset.astype(np.float32)
    digest = hashlib.sha256()
    for arr in (offset32, gain, defects):
        digest.update(arr.tobytes())
    serial, mode = ref.meta.detector_serial, ref.meta.mode
    calibration_id = f"{serial}-{mode}-{created_at:%Y%m%dT%H%M%S%fZ}-{digest.hexdigest()[:8]}"
    temps = [f.meta.temperature_c for f in (*darks, *flats)]
    acquired = sorted(f.meta.acquired_at for f in (*darks, *flats))
    cal = CalibrationSet(
        key=CalibrationKey(detector_serial=serial, mode=mode),
        calibration_id=calibration_id,
        created_at=created_at,
        offset=offset32,
        gain=gain,
        defects=defects,
        counts_per_ugy=mean_signal / flat_kerma_ugy,
        temperature_c=float(np.mean(temps)),
        provenance={
            "dark_frames": [f.meta.frame_number for f in darks],
            "flat_frames": [f.meta.frame_number for f in flats],
            "flat_kerma_ugy": float(flat_kerma_ugy),
            "technique": None if technique is None else {"kvp": technique.kvp, "mas": technique.mas},
            "temperature_c": {"mean": float(np.mean(temps)), "min": float(min(temps)), "max": float(max(temps))},
            "acquired_from": acquired[0].isoformat(),
            "acquired_to": acquired[-1].isoformat(),
            "operator": operator,
            "software": f"dxgate {_software_version()}",
            "rows": shape[0],
            "columns": shape[1],
            "bits_stored": ref.meta.bits_stored,
            "mean_flat_signal": mean_signal,
            "median_dark_sd": median_sd,
            "defect_counts": count_defects(defects),
            "defect_rules": {
                "dead_below": DEAD_RATIO, "under_below": UNDER_RATIO, "over_above": OVER_RATIO,
                "noisy_sd_above": NOISY_SD_RATIO, "hot_offset_fraction": HOT_OFFSET_FRACTION,
                "line_fraction": LINE_FRACTION,
                "local_median": f"{LOCAL_WINDOW}x{LOCAL_WINDOW}: 3x3 median of {LOCAL_WINDOW // 3}x"
                                f"{LOCAL_WINDOW // 3} tile medians, bilinear",
            },
        },
    )
    LOGGER.info("calibrated %s from %d darks, %d flats: %.1f counts/uGy, %d defective pixels %s",
                calibration_id, len(darks), len(flats), cal.counts_per_ugy, n_bad, cal.defect_counts())
    return cal


def local_median(image: np.ndarray, window: int = LOCAL_WINDOW) -> np.ndarray:
    """Approximate window x window median of a 2-D map (see module docstring), float32."""
    if window < 3 or window % 3:
        raise ValueError(f"window must be a multiple of 3, got {window}")
    tile = window // 3
    rows, cols = image.shape
    padded = np.pad(image.astype(np.float32, copy=False), ((0, -rows % tile), (0, -cols % tile)), mode="reflect")
    pr, pc = padded.shape
    tiles = padded.reshape(pr // tile, tile, pc // tile, tile).transpose(0, 2, 1, 3).reshape(
        pr // tile, pc // tile, tile * tile)
    medians: np.ndarray = np.ascontiguousarray(np.median(tiles, axis=2), dtype=np.float32)
    if min(medians.shape) >= 3:
        medians = cv2.medianBlur(medians, 3)
    full = cv2.resize(medians, (pc, pr), interpolation=cv2.INTER_LINEAR)
    return full[:rows, :cols]


def _check_frames(darks: Sequence[RawFrame], flats: Sequence[RawFrame]) -> RawFrame:
    if len(darks) < MIN_DARKS:
        raise CalibrationError(f"need at least {MIN_DARKS} dark frames, got {len(darks)}")
    if len(flats) < MIN_FLATS:
        raise CalibrationError(f"need at least {MIN_FLATS} flat-field frames, got {len(flats)}")
    for role, frames, kind in (("dark", darks, FrameKind.DARK), ("flat-field", flats, FrameKind.EXPOSED)):
        for f in frames:
            if f.meta.kind is not kind:
                raise CalibrationError(
                    f"{role} frame {f.meta.frame_number} is a {f.meta.kind.value} frame, expected {kind.value}")
    ref = darks[0]
    want = (ref.meta.detector_serial, ref.meta.mode, ref.meta.rows, ref.meta.columns, ref.meta.bits_stored)
    for f in (*darks, *flats):
        got = (f.meta.detector_serial, f.meta.mode, f.meta.rows, f.meta.columns, f.meta.bits_stored)
        if got != want:
            raise CalibrationError(
                f"frame {f.meta.frame_number} is from serial {got[0]} mode {got[1]} {got[2]}x{got[3]} "
                f"{got[4]}-bit, but frame {ref.meta.frame_number} is from serial {want[0]} mode {want[1]} "
                f"{want[2]}x{want[3]} {want[4]}-bit: one calibration needs frames of one detector and mode")
    return ref


def _mean(frames: Sequence[RawFrame]) -> np.ndarray:
    """Per-pixel mean (float64), accumulated frame by frame."""
    total = np.zeros(frames[0].pixels.shape, np.float64)
    for f in frames:
        total += f.pixels
    return total / len(frames)


def _mean_and_sd(frames: Sequence[RawFrame]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean (float64) and temporal SD (float32), accumulated frame by frame."""
    total = np.zeros(frames[0].pixels.shape, np.float64)
    squares = np.zeros_like(total)
    scratch = np.empty_like(total)
    for f in frames:
        np.copyto(scratch, f.pixels)
        total += scratch
        scratch *= scratch
        squares += scratch
    n = len(frames)
    mean = total / n
    var = (squares - total * mean) / (n - 1)
    return mean, np.sqrt(np.maximum(var, 0)).astype(np.float32)


def _check_flats(flats: Sequence[RawFrame], offset: np.ndarray, median_signal: float, median_sd: float,
                 full_scale: float) -> None:
    for f in flats:
        saturated = np.count_nonzero(f.pixels >= full_scale) / f.pixels.size
        if saturated > MAX_SATURATED_FRACTION:
            raise CalibrationError(
                f"flat-field frame {f.meta.frame_number} is saturated ({100 * saturated:.1f} % of pixels at full "
                f"scale {full_scale:.0f}): lower the dose (mAs)")
    need = max(MIN_SIGNAL_NOISE_RATIO * median_sd, 1.0)
    if median_signal < need:
        raise CalibrationError(
            f"flat-field frames show no X-ray signal: median {median_signal:.1f} counts above offset, need at "
            f"least {need:.1f} ({MIN_SIGNAL_NOISE_RATIO:.0f}x the dark noise): was the beam on?")
    sub = offset[::4, ::4]
    for f in flats:
        m = float(np.median(f.pixels[::4, ::4] - sub))
        if abs(m - median_signal) > FLAT_AGREEMENT * median_signal:
            raise CalibrationError(
                f"flat-field frame {f.meta.frame_number} has a median signal of {m:.0f} counts, the flats together "
                f"{median_signal:.0f}: flats must be taken at one technique (generator misfire?)")


def _classify(offset: np.ndarray, dark_sd: np.ndarray, flat_mean: np.ndarray, signal: np.ndarray,
              local: np.ndarray, median_sd: float, median_signal: float, full_scale: float) -> np.ndarray:
    """Defect map; where rules overlap: hot > dead > noisy > over > under, lines last."""
    ratio = signal / np.maximum(local, 1e-6)
    defects = np.zeros(signal.shape, np.uint8)
    defects[ratio < UNDER_RATIO] = DefectClass.UNDER
    defects[ratio > OVER_RATIO] = DefectClass.OVER
    if median_sd > 0:
        defects[dark_sd > NOISY_SD_RATIO * median_sd] = DefectClass.NOISY
    else:
        LOGGER.warning("dark frames show no noise at all; noisy-pixel detection skipped")
    defects[ratio < DEAD_RATIO] = DefectClass.DEAD
    hot = ((offset - float(np.median(offset)) > HOT_OFFSET_FRACTION * median_signal)
           | (offset >= full_scale - 0.5) | (flat_mean >= full_scale - 0.5))
    defects[hot] = DefectClass.HOT
    bad = defects != DefectClass.GOOD
    for axis in (1, 0):
        lines = bad.mean(axis=axis) > LINE_FRACTION
        if lines.any():
            sel = (lines[:, None] if axis == 1 else lines[None, :]) & ~bad
            defects[sel] = DefectClass.LINE
            LOGGER.info("%d defective %s", int(lines.sum()), "rows" if axis == 1 else "columns")
    return defects


def _software_version() -> str:
    try:
        return importlib.metadata.version("dxgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
