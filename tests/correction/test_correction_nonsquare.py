"""Correction of a non-square panel (3072 x 2560-style geometry), against a plain reference.

Real panels are often not square; every simulated mode is. A reference written here in a few
NumPy lines (not the corrector's banded cv2 path) says what each pixel must be, so a corrector
that mixes up rows and columns, skips a band or repairs from the wrong neighbours goes red.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pytest

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


def test_clipped_to_bits_stored_and_written_into_out() -> None:
    """A 12-bit frame: gain never lifts a pixel above 4095, a raw 4095 stays 4095; `out=` receives it."""
    rng = np.random.default_rng(6)
    cal = _cal(64, 48, rng)
    cal = dataclasses.replace(cal, gain=rng.uniform(1.2, 1.6, (64, 48)).astype(np.float32))
    raw = np.clip(cal.offset + rng.uniform(2000, 3000, (64, 48)), 0, 4095).astype(np.uint16)
    raw[0, 0] = 4095
    frame = _frame(raw)
    frame = RawFrame(pixels=raw, meta=dataclasses.replace(frame.meta, bits_stored=12))
    out = np.zeros((64, 48), np.uint16)
    result = Corrector(cal).apply(frame, out=out).pixels
    ref = np.clip(np.rint((raw.astype(np.float64) - cal.offset) * cal.gain), 0, 4095)
    ref[raw == 4095] = 4095
    assert np.shares_memory(result, out) and not result.flags.writeable and out.flags.writeable
    assert out.max() == 4095 and out[0, 0] == 4095
    assert (ref == 4095).sum() > 10  # the gain would have lifted these above 12 bits
    good = cal.defects == 0
    assert np.abs(out[good].astype(np.int64) - ref[good]).max() <= 1
    with pytest.raises(ValueError, match="C-contiguous uint16 array of shape"):
        Corrector(cal).apply(frame, out=np.zeros((64, 48), np.float32))


def test_corrects_without_a_writable_numba_cache() -> None:
    """Under systemd's ProtectSystem=strict numba finds nowhere to cache: import and correct anyway."""
    code = (
        "import numba.core.caching as c\n"
        "c.CacheImpl._locator_classes = []  # no writable cache location anywhere\n"
        "import numpy as np\n"
        "from gateway.correction import apply\n"
        "out = np.zeros((2, 2), np.uint16)\n"
        "apply._correct_rows(np.full((2, 2), 1100, np.uint16), np.full((2, 2), 100, np.float32), 1.0, 0.0,\n"
        "                    np.full((2, 2), 2, np.float32), 1.0, 0.0, 65535, 0, 2, out)\n"
        "assert (out == 2000).all(), out\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
