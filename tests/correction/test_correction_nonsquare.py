"""Correction of a non-square panel (3072 x 2560-style geometry), against a plain reference.

Real panels are often not square; every simulated mode is. A reference written here in a few
NumPy lines (not the corrector's banded cv2 path) says what each pixel must be, so a corrector
that mixes up rows and columns, skips a band or repairs from the wrong neighbours goes red.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from gateway.correction import CalibrationSet, Corrector, DefectClass
from gateway.types import CalibrationKey, FrameKind, FrameMeta, RawFrame

ROWS, COLS = 700, 333  # bands of CHUNK_BYTES // (4 * 333) = 787 rows: a single band, and then many below


def _cal(rows: int, cols: int, rng: np.random.Generator) -> CalibrationSet:
    defects = np.zeros((rows, cols), np.uint8)
    defects[rng.integers(1, rows - 1, 30), rng.integers(1, cols - 1, 30)] = DefectClass.DEAD
    return CalibrationSet(key=CalibrationKey("SIM-R", "r"), calibration_id="SIM-R-r-20260101T000000000000Z-1",
                          created_at=datetime(2026, 1, 1, tzinfo=UTC),
                          offset=rng.normal(1000, 30, (rows, cols)).astype(np.float32),
                          gain=rng.uniform(0.8, 1.25, (rows, cols)).astype(np.float32), defects=defects,
                          counts_per_ugy=400.0, temperature_c=30.0, provenance={})


def _frame(pixels: np.ndarray) -> RawFrame:
    meta = FrameMeta(frame_number=1, detector_serial="SIM-R", mode="r", rows=pixels.shape[0], columns=pixels.shape[1],
                     bits_stored=16, kind=FrameKind.EXPOSED, temperature_c=30.0,
                     acquired_at=datetime(2026, 1, 1, tzinfo=UTC), crc32=0)
    return RawFrame(pixels=pixels, meta=meta)


def _reference(raw: np.ndarray, cal: CalibrationSet) -> np.ndarray:
    out = np.clip(np.rint((raw.astype(np.float64) - cal.offset) * cal.gain), 0, 65535)
    out[raw == 65535] = 65535
    bad = cal.defects != 0
    for y, x in zip(*np.nonzero(bad), strict=True):
        win = out[y - 1:y + 2, x - 1:x + 2]
        good = ~bad[y - 1:y + 2, x - 1:x + 2]
        out[y, x] = np.rint(win[good].mean())
    return out.astype(np.uint16)


def test_a_non_square_frame_is_corrected_pixel_for_pixel() -> None:
    rng = np.random.default_rng(5)
    for rows, cols in ((ROWS, COLS), (COLS, ROWS), (2 * 1600, 350)):  # tall, wide, and many bands
        cal = _cal(rows, cols, rng)
        raw = np.clip(cal.offset + rng.uniform(500, 3000, (rows, cols)), 0, 65535).astype(np.uint16)
        raw[3, 5] = 65535  # saturated stays saturated
        out = Corrector(cal).apply(_frame(raw)).pixels
        ref = _reference(raw, cal)
        assert out.shape == (rows, cols)
        diff = np.abs(out.astype(np.int64) - ref)
        assert diff.max() <= 1, (rows, cols, int(diff.max()))  # float32 vs float64 rounding at .5 only
        assert out[3, 5] == 65535
