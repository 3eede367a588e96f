"""Make a CalibrationSet from dark and flat-field frames (offset, gain, defect maps).

CalibrationBuilder takes the frames one at a time as they are acquired (memory: a few float32
maps, whatever the number of frames), checks each flat before it is used, and builds the set;
calibrate() does the same from lists.

Defects follow ASTM E2597 practice as DESIGN.md puts it. The 21x21 local median that the
over/under-responding rules compare against is approximated, so that it costs tens of
milliseconds on a 1536x1536 map instead of seconds: the map is cut into 7x7 tiles, each
tile replaced by its median, the 3x3 median of those tile medians (a 21x21 footprint)
taken with cv2.medianBlur, and the result interpolated bilinearly back to full size. The
detector's response varies smoothly over far more than 21 pixels and defects are sparse,
so a median of medians is as robust as the exact median for this purpose.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime

import cv2
import numpy as np

from gateway.correction.calibration_set import CalibrationSet, DefectClass, count_defects
from gateway.correction.defects import (
    DEAD_RATIO,
    HOT_OFFSET_FRACTION,
    LAG_EXCESS,
    LINE_FRACTION,
    LINE_MIN_LENGTH,
    NOISY_SD_RATIO,
    OVER_RATIO,
    UNDER_RATIO,
    Maps,
    classify,
)
from gateway.correction.frame_checks import CalibrationLimits, check_darks, check_flat
from gateway.correction.frame_stats import TRIM_FROM, FrameStats
from gateway.correction.multipoint import response_levels
from gateway.errors import CalibrationError
from gateway.types import CalibrationKey, FrameKind, FrameMeta, RawFrame, Technique

LOGGER = logging.getLogger(__name__)

MIN_DARKS = 2
MIN_FLATS = 2
LOCAL_WINDOW = 21  # pixels, side of the local median neighbourhood
MAX_DEFECT_FRACTION = 0.05  # more defective pixels than this: refuse, something is wrong


def calibrate(darks: Iterable[RawFrame], flats: Iterable[RawFrame], *, flat_kerma_ugy: float,
              lag_darks: Iterable[RawFrame] = (), operator: str = "", technique: Technique | None = None,
              now: datetime | None = None, limits: CalibrationLimits | None = None) -> CalibrationSet:
    """A calibration set from darks, flats and (for lag) darks taken right after a flat.

    Raises CalibrationError, naming the frame and the problem, for mixed serials/modes/geometries,
    frames of the wrong kind, too few frames, darks that saw light, flats without signal,
    saturated, of another technique, outside the count window or with an object in the beam.
    """
    if not (math.isfinite(flat_kerma_ugy) and flat_kerma_ugy > 0):
        raise CalibrationError(f"flat_kerma_ugy must be a positive air kerma in uGy, got {flat_kerma_ugy}")
    b = CalibrationBuilder(limits)
    for f in darks:
        b.add_dark(f)
    b.darks_done()
    for f in flats:
        b.add_flat(f)
    for f in lag_darks:
        b.add_lag_dark(f)
    return b.build(flat_kerma_ugy=flat_kerma_ugy, operator=operator, technique=technique, now=now)


class CalibrationBuilder:
    """Darks first (add_dark, then darks_done), then flats, then optional lag darks; build()."""

    def __init__(self, limits: CalibrationLimits | None = None) -> None:
        self.limits = limits or CalibrationLimits()
        self._metas: dict[str, list[FrameMeta]] = {"dark": [], "flat-field": [], "lag dark": []}
        self._darks: FrameStats | None = None
        self._flats: FrameStats | None = None
        self._lag: np.ndarray | None = None
        self.offset: np.ndarray | None = None
        self.dark_sd: np.ndarray | None = None
        self.median_sd = 0.0
        self._first_flat_median: float | None = None
        # Multi-point gain: flats at further dose levels, by air kerma: (running mean, first median, frames)
        self._levels: dict[float, tuple[FrameStats, float, list[int]]] = {}

    @property
    def counts(self) -> dict[str, int]:
        return {role: len(metas) for role, metas in self._metas.items()}

    def metas(self, role: str) -> list[FrameMeta]:
        """Headers of the frames taken so far as `role` (dark, flat-field, lag dark)."""
        return list(self._metas[role])

    def add_dark(self, frame: RawFrame) -> None:
        if self.offset is not None:
            raise CalibrationError("dark frames come before darks_done()")
        self._take("dark", frame, FrameKind.DARK)
        if self._darks is None:
            self._darks = FrameStats((frame.meta.rows, frame.meta.columns))
        self._darks.add(frame.pixels)

    def darks_done(self) -> None:
        """Offset and dark noise from the darks; CalibrationError when they show light."""
        n = len(self._metas["dark"])
        if n < MIN_DARKS or self._darks is None:
            raise CalibrationError(f"need at least {MIN_DARKS} dark frames, got {n}")
        offset, dark_sd = self._darks.result()
        if dark_sd is None:  # pragma: no cover - darks always keep their squares
            raise CalibrationError("dark frames kept no noise statistics")
        median_sd = float(np.median(dark_sd[::2, ::2]))
        levels, self._darks = self._darks.frame_levels, None
        check_darks([m.frame_number for m in self._metas["dark"]], levels, offset, median_sd, self.limits)
        self.offset, self.dark_sd, self.median_sd = offset, dark_sd, median_sd  # only darks that passed

    def add_flat(self, frame: RawFrame) -> float:
        """Check one flat and use it; its median signal. A refused flat (CalibrationError, saying
        what to do) leaves the builder as it was: take the flat again."""
        if self.offset is None:
            raise CalibrationError("flat-field frames come after the darks (darks_done())")
        self._check_meta("flat-field", frame, FrameKind.EXPOSED)
        median = check_flat(frame, self.offset, self.median_sd, self._full_scale(frame), self.limits,
                            first_median=self._first_flat_median)
        self._metas["flat-field"].append(frame.meta)
        if self._flats is None:
            self._flats = FrameStats(self.offset.shape, with_sd=False)
            self._first_flat_median = median
        self._flats.add(frame.pixels)
        return median

    def add_level_flat(self, frame: RawFrame, kerma_ugy: float) -> float:
        """A flat at another dose level (`kerma_ugy` at the detector) for a multi-point gain,
        checked like the reference flats except for the count window's top (up to 90 % of full
        scale: the response must be known where it bends). Its median signal."""
        if self.offset is None:
            raise CalibrationError("flat-field frames come after the darks (darks_done())")
        if not (math.isfinite(kerma_ugy) and kerma_ugy > 0):
            raise CalibrationError(f"a dose level needs a positive air kerma in uGy, got {kerma_ugy}")
        self._check_meta("flat-field", frame, FrameKind.EXPOSED)
        full_scale = self._full_scale(frame)
        level = self._levels.get(kerma_ugy)
        limits = dataclasses.replace(self.limits, flat_median_max=max(self.limits.flat_median_max, 0.9 * full_scale))
        median = check_flat(frame, self.offset, self.median_sd, full_scale, limits,
                            first_median=None if level is None else level[1])
        if level is None:
            level = (FrameStats(self.offset.shape, with_sd=False), median, [])
            self._levels[kerma_ugy] = level
        level[0].add(frame.pixels)
        level[2].append(frame.meta.frame_number)
        return median

    def add_lag_dark(self, frame: RawFrame) -> None:
        """A dark frame taken right after a flat: what it still shows is lag."""
        if self._flats is None:
            raise CalibrationError("a lag dark frame is taken right after a flat: add flats first")
        self._take("lag dark", frame, FrameKind.DARK)
        if self._lag is None:
            self._lag = np.zeros(self._flats.shape, np.float32)
        self._lag += frame.pixels

    def build(self, *, flat_kerma_ugy: float, operator: str = "", technique: Technique | None = None,
              now: datetime | None = None) -> CalibrationSet:
        if not (math.isfinite(flat_kerma_ugy) and flat_kerma_ugy > 0):
            raise CalibrationError(f"flat_kerma_ugy must be a positive air kerma in uGy, got {flat_kerma_ugy}")
        created_at = datetime.now(UTC) if now is None else now
        if created_at.tzinfo is None or created_at.utcoffset() is None:
            raise CalibrationError(f"calibration time {created_at} has no time zone")
        created_at = created_at.astimezone(UTC)
        n_flats = len(self._metas["flat-field"])
        if self.offset is None or self.dark_sd is None:
            raise CalibrationError(f"need at least {MIN_DARKS} dark frames, got {len(self._metas['dark'])}")
        if n_flats < MIN_FLATS or self._flats is None:
            raise CalibrationError(f"need at least {MIN_FLATS} flat-field frames, got {n_flats}")
        ref = self._metas["dark"][0]
        full_scale = float((1 << ref.bits_stored) - 1)
        offset, shape = self.offset, self.offset.shape
        flat_mean, _ = self._flats.result()
        self._flats = None
        signal = flat_mean - offset
        lag = None
        if self._lag is not None:
            lag = self._lag / len(self._metas["lag dark"])
            lag -= offset
        local = local_median(signal, LOCAL_WINDOW)
        defects, summary = classify(Maps(offset=offset, dark_sd=self.dark_sd, flat_mean=flat_mean, signal=signal,
                                         local=local, lag=lag), full_scale=full_scale)
        del local, lag, flat_mean
        n_bad = int(np.count_nonzero(defects))
        if n_bad > MAX_DEFECT_FRACTION * defects.size:
            raise CalibrationError(
                f"{n_bad} of {defects.size} pixels ({100 * n_bad / defects.size:.1f} %) classed defective, more "
                f"than {100 * MAX_DEFECT_FRACTION:.0f} %: check the flats (uniform open field?) and the panel")
        good = defects == DefectClass.GOOD
        mean_signal = float(signal[good].mean(dtype=np.float64))
        gain = np.ones(shape, np.float32)
        np.divide(np.float32(mean_signal), signal, out=gain, where=good)
        response, targets, levels = self._response(flat_kerma_ugy, signal, offset, good)
        del signal

        digest = hashlib.sha256()
        for arr in (offset, gain, defects):
            digest.update(arr.tobytes())
        calibration_id = f"{ref.detector_serial}-{ref.mode}-{created_at:%Y%m%dT%H%M%S%fZ}-{digest.hexdigest()[:8]}"
        metas = [*self._metas["dark"], *self._metas["flat-field"]]
        temps = [m.temperature_c for m in metas]
        acquired = sorted(m.acquired_at for m in (*metas, *self._metas["lag dark"]))
        cal = CalibrationSet(
            key=CalibrationKey(detector_serial=ref.detector_serial, mode=ref.mode),
            calibration_id=calibration_id,
            created_at=created_at,
            offset=offset,
            gain=gain,
            defects=defects,
            counts_per_ugy=mean_signal / flat_kerma_ugy,
            temperature_c=float(np.mean(temps)),
            response=response,
            response_targets=targets,
            provenance={
                "gain_levels": levels,
                "dark_frames": [m.frame_number for m in self._metas["dark"]],
                "flat_frames": [m.frame_number for m in self._metas["flat-field"]],
                "lag_frames": [m.frame_number for m in self._metas["lag dark"]],
                "flat_kerma_ugy": float(flat_kerma_ugy),
                "technique": None if technique is None else {"kvp": technique.kvp, "mas": technique.mas},
                "temperature_c": {"mean": float(np.mean(temps)), "min": float(min(temps)),
                                  "max": float(max(temps))},
                "acquired_from": acquired[0].isoformat(),
                "acquired_to": acquired[-1].isoformat(),
                "operator": operator,
                "software": f"dxgate {_software_version()}",
                "rows": shape[0],
                "columns": shape[1],
                "bits_stored": ref.bits_stored,
                "mean_flat_signal": mean_signal,
                "median_dark_sd": self.median_sd,
                "offset_average": "per-pixel mean without each pixel's lowest and highest frame"
                                  if len(self._metas["dark"]) >= TRIM_FROM else "per-pixel mean",
                "defect_counts": count_defects(defects),
                "clusters": summary["clusters"],
                "lag_median_fraction": summary["lag_median_fraction"],
                "limits": dataclasses.asdict(self.limits),
                "defect_rules": {
                    "dead_below": DEAD_RATIO, "under_below": UNDER_RATIO, "over_above": OVER_RATIO,
                    "noisy_sd_above": NOISY_SD_RATIO, "hot_offset_fraction": HOT_OFFSET_FRACTION,
                    "lag_excess": LAG_EXCESS, "line_fraction": LINE_FRACTION, "line_min_length": LINE_MIN_LENGTH,
                    "cluster": "8-connected, 2 pixels or more, outside lines",
                    "local_median": f"{LOCAL_WINDOW}x{LOCAL_WINDOW}: 3x3 median of {LOCAL_WINDOW // 3}x"
                                    f"{LOCAL_WINDOW // 3} tile medians, bilinear",
                },
            },
        )
        LOGGER.info("calibrated %s from %d darks, %d flats: %.1f counts/uGy, %d defective pixels %s",
                    calibration_id, len(self._metas["dark"]), n_flats, cal.counts_per_ugy, n_bad,
                    cal.defect_counts())
        return cal

    def _response(self, flat_kerma_ugy: float, signal: np.ndarray, offset: np.ndarray,
                  good: np.ndarray) -> tuple[np.ndarray | None, tuple[float, ...], list[dict[str, object]]]:
        """The multi-point response (None without further dose levels) and each level's record."""
        frames = {float(flat_kerma_ugy): [m.frame_number for m in self._metas["flat-field"]]}
        if not self._levels:
            return None, (), [{"kerma_ugy": float(flat_kerma_ugy), "flat_frames": frames[float(flat_kerma_ugy)]}]
        if flat_kerma_ugy in self._levels:
            raise CalibrationError(f"a further dose level of {flat_kerma_ugy:g} uGy is the reference flats' own")
        levels = [(float(flat_kerma_ugy), signal)]
        for kerma, (stats, _, numbers) in sorted(self._levels.items()):
            mean, _ = stats.result()
            mean -= offset
            levels.append((kerma, mean))
            frames[kerma] = numbers
        self._levels = {}
        knots, targets = response_levels(levels, good)
        records: list[dict[str, object]] = [{"kerma_ugy": k, "flat_frames": frames[k], "mean_signal": t}
                                            for k, t in zip(sorted(frames), targets, strict=True)]
        return knots, targets, records

    def _take(self, role: str, frame: RawFrame, kind: FrameKind) -> None:
        self._check_meta(role, frame, kind)
        self._metas[role].append(frame.meta)

    def _check_meta(self, role: str, frame: RawFrame, kind: FrameKind) -> None:
        m = frame.meta
        if m.kind is not kind:
            raise CalibrationError(f"{role} frame {m.frame_number} is a {m.kind.value} frame, expected {kind.value}")
        first = next((ms[0] for ms in self._metas.values() if ms), None)
        if first is None:
            return
        want = (first.detector_serial, first.mode, first.rows, first.columns, first.bits_stored)
        got = (m.detector_serial, m.mode, m.rows, m.columns, m.bits_stored)
        if got != want:
            raise CalibrationError(
                f"frame {m.frame_number} is from serial {got[0]} mode {got[1]} {got[2]}x{got[3]} "
                f"{got[4]}-bit, but frame {first.frame_number} is from serial {want[0]} mode {want[1]} "
                f"{want[2]}x{want[3]} {want[4]}-bit: one calibration needs frames of one detector and mode")

    @staticmethod
    def _full_scale(frame: RawFrame) -> float:
        return float((1 << frame.meta.bits_stored) - 1)


def refresh_offset(cal: CalibrationSet, darks: Iterable[RawFrame], *, now: datetime | None = None,
                   limits: CalibrationLimits | None = None) -> CalibrationSet:
    """A new version of `cal` whose offset comes from fresh darks (taken while the room is idle:
    the offset drifts with temperature and time); gain and defect maps are kept."""
    b = CalibrationBuilder(limits)
    for f in darks:
        if (f.meta.detector_serial, f.meta.mode) != (cal.key.detector_serial, cal.key.mode):
            raise CalibrationError(f"dark frame {f.meta.frame_number} is from detector {f.meta.detector_serial} "
                                   f"mode {f.meta.mode}, not {cal.key.detector_serial} mode {cal.key.mode}")
        b.add_dark(f)
    b.darks_done()
    metas = b.metas("dark")
    if b.offset is None or b.offset.shape != cal.shape:
        raise CalibrationError(f"dark frames do not match calibration {cal.calibration_id} ({cal.shape})")
    created_at = datetime.now(UTC) if now is None else now
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise CalibrationError(f"calibration time {created_at} has no time zone")
    created_at = created_at.astimezone(UTC)
    digest = hashlib.sha256()
    for arr in (b.offset, cal.gain, cal.defects):
        digest.update(arr.tobytes())
    key = cal.key
    temps = [m.temperature_c for m in metas]
    acquired = sorted(m.acquired_at for m in metas)
    provenance = {**cal.provenance, "offset_refreshed_from": cal.calibration_id,
                  # the gain's (and defects') own date: the set's age limit counts from it (store.check_age)
                  "gain_calibrated_at": cal.provenance.get("gain_calibrated_at", cal.created_at.isoformat()),
                  "offset_dark_frames": [m.frame_number for m in metas],
                  "offset_acquired_from": acquired[0].isoformat(), "offset_acquired_to": acquired[-1].isoformat(),
                  "offset_temperature_c": float(np.mean(temps)), "offset_median_dark_sd": b.median_sd}
    new = CalibrationSet(
        key=key, calibration_id=f"{key.detector_serial}-{key.mode}-{created_at:%Y%m%dT%H%M%S%fZ}-"
                                f"{digest.hexdigest()[:8]}",
        created_at=created_at, offset=b.offset, gain=np.array(cal.gain), defects=np.array(cal.defects),
        counts_per_ugy=cal.counts_per_ugy, temperature_c=float(np.mean(temps)), provenance=provenance,
        response=None if cal.response is None else np.array(cal.response), response_targets=cal.response_targets)
    LOGGER.info("offset of %s refreshed from %d darks: %s", cal.calibration_id, len(metas), new.calibration_id)
    return new


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


def _software_version() -> str:
    try:
        return importlib.metadata.version("dxgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
