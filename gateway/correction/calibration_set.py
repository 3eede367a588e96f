"""One detector calibration: offset, gain and defect maps for a serial and readout mode."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

import numpy as np

from gateway.errors import CalibrationError
from gateway.types import CalibrationKey

LOGGER = logging.getLogger(__name__)


class DefectClass(enum.IntEnum):
    """Codes of the defect map (ASTM E2597 practice); 0 is a good pixel."""

    GOOD = 0
    DEAD = 1  # no response to X-rays
    HOT = 2  # saturated, or an offset eating half the dynamic range
    OVER = 3  # > 1.3x the local 21x21 median response
    UNDER = 4  # < 0.6x the local 21x21 median response (but not dead)
    NOISY = 5  # dark-frame SD > 6x the median SD
    LINE = 6  # in a row or column segment with > 50 % bad pixels
    LAG = 7  # keeps signal of the previous exposure in the next dark frame
    CLUSTER = 8  # one of a group of adjacent defective pixels (not a line)


@dataclass(frozen=True, eq=False)
class CalibrationInfo:
    """What a set says about itself, without its maps: what a Corrector keeps once it has
    made its compact maps and repair tables (the set's float32 maps can then be freed)."""

    key: CalibrationKey
    calibration_id: str
    created_at: datetime
    counts_per_ugy: float
    temperature_c: float
    shape: tuple[int, int]
    provenance: Mapping[str, object]


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """Maps and metadata of one calibration, read-only once made.

    gain is multiplicative and normalised so that a corrected flat field has the flat's
    mean signal; counts_per_ugy is that mean signal divided by the flat's air kerma.
    """

    key: CalibrationKey
    calibration_id: str
    created_at: datetime
    offset: np.ndarray  # float32 counts
    gain: np.ndarray  # float32, multiplies (raw - offset)
    defects: np.ndarray  # uint8 DefectClass codes
    counts_per_ugy: float
    temperature_c: float
    provenance: Mapping[str, object]
    # Multi-point gain (None: the single-point gain map): each pixel's mean signal (counts above
    # offset) at each dose level, shape (levels, rows, columns), and the panel's mean signal at
    # each level, the value the level is corrected to; between levels the response is linear.
    response: np.ndarray | None = None
    response_targets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        where = f"calibration {self.calibration_id!r}"
        if self.created_at.tzinfo is None or self.created_at.utcoffset() is None:
            raise CalibrationError(f"{where}: created_at {self.created_at} has no time zone")
        for name, dtype in (("offset", np.float32), ("gain", np.float32), ("defects", np.uint8)):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 2:
                got = f"{arr.dtype}{arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise CalibrationError(f"{where}: {name} map must be a 2-D {np.dtype(dtype)} array, got {got}")
        if not self.offset.shape == self.gain.shape == self.defects.shape:
            raise CalibrationError(
                f"{where}: map shapes differ: offset {self.offset.shape}, gain {self.gain.shape}, "
                f"defects {self.defects.shape}")
        unknown = set(np.unique(self.defects).tolist()) - {int(c) for c in DefectClass}
        if unknown:
            raise CalibrationError(f"{where}: defect map holds unknown class codes {sorted(unknown)}")
        if not (math.isfinite(self.counts_per_ugy) and self.counts_per_ugy > 0):
            raise CalibrationError(f"{where}: counts_per_ugy must be positive, got {self.counts_per_ugy}")
        _check_maps(where, self.offset, self.gain, self.defects)
        if self.response is not None:
            _check_response(where, self.response, tuple(self.response_targets), self.shape)
            object.__setattr__(self, "response_targets", tuple(float(t) for t in self.response_targets))
            self.response.flags.writeable = False
        elif self.response_targets:
            raise CalibrationError(f"{where}: response targets without a response map")
        for arr in (self.offset, self.gain, self.defects):
            arr.flags.writeable = False
        if not isinstance(self.provenance, MappingProxyType):
            object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.offset.shape[0]), int(self.offset.shape[1]))

    def defect_counts(self) -> dict[str, int]:
        """Number of pixels of each defect class (good pixels excluded), by class name."""
        return count_defects(self.defects)

    @property
    def info(self) -> CalibrationInfo:
        return CalibrationInfo(key=self.key, calibration_id=self.calibration_id, created_at=self.created_at,
                               counts_per_ugy=self.counts_per_ugy, temperature_c=self.temperature_c,
                               shape=self.shape, provenance=self.provenance)


# A gain map is a correction of a panel's non-uniformity: a good pixel needing more than this
# factor either way is not a pixel the set can correct (an all-zero or exploded map would
# otherwise turn every exposure into a blank or a saturated image after the dose).
GAIN_RANGE = (0.05, 20.0)
MAX_DEFECT_FRACTION = 0.05


def _check_maps(where: str, offset: np.ndarray, gain: np.ndarray, defects: np.ndarray) -> None:
    for name, arr in (("offset", offset), ("gain", gain)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise CalibrationError(f"{where}: {name} map holds {bad} NaN or infinite values: refused")
    good = defects == DefectClass.GOOD
    fraction = 1.0 - float(np.count_nonzero(good)) / good.size
    if fraction > MAX_DEFECT_FRACTION:
        raise CalibrationError(f"{where}: {fraction:.1%} of the pixels are marked defective (limit "
                               f"{MAX_DEFECT_FRACTION:.0%}): the set cannot make a diagnostic image")
    g = gain[good]
    out = int(np.count_nonzero((g < GAIN_RANGE[0]) | (g > GAIN_RANGE[1])))
    if out:
        raise CalibrationError(f"{where}: gain map has {out} good pixels outside [{GAIN_RANGE[0]:g}, "
                               f"{GAIN_RANGE[1]:g}] (an all-zero or corrupt map?): refused")


def _check_response(where: str, response: np.ndarray, targets: tuple[float, ...], shape: tuple[int, int]) -> None:
    if (not isinstance(response, np.ndarray) or response.dtype != np.float32 or response.ndim != 3
            or response.shape[1:] != shape or response.shape[0] < MIN_LEVELS):
        got = f"{response.dtype}{response.shape}" if isinstance(response, np.ndarray) else type(response).__name__
        raise CalibrationError(f"{where}: multi-point response must be a float32 array of {MIN_LEVELS} or more "
                               f"levels of {shape[0]}x{shape[1]}, got {got}")
    if len(targets) != response.shape[0] or not all(math.isfinite(t) and t > 0 for t in targets) or any(
            b <= a for a, b in zip(targets, targets[1:], strict=False)):
        raise CalibrationError(f"{where}: multi-point targets {targets} must be {response.shape[0]} increasing "
                               "positive signals")
    if not np.isfinite(response).all() or not (np.diff(response, axis=0) > 0).all() or not (response[0] > 0).all():
        raise CalibrationError(f"{where}: multi-point response is not positive and increasing with dose at every "
                               "pixel: refused")


MIN_LEVELS = 3  # dose levels of a multi-point gain


def count_defects(defects: np.ndarray) -> dict[str, int]:
    """Number of pixels of each defect class in a defect map (good pixels excluded), by class name."""
    counts = np.bincount(defects.ravel(), minlength=len(DefectClass))
    return {c.name.lower(): int(counts[c]) for c in DefectClass if c is not DefectClass.GOOD}
