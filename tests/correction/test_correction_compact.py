"""The Corrector's compact maps: half the bytes of the float32 maps, the same image within a count.

The reference is the float64 arithmetic on the set's own float32 maps, written here; the
simulator's panel gives realistic maps, synthetic ones the ranges that fixed point cannot hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from gateway.correction import CalibrationSet, Corrector, DefectClass
from gateway.types import RawFrame
from tests.correction.conftest import Panel


def _reference(raw: RawFrame, cal: CalibrationSet) -> np.ndarray:
    out = np.clip(np.rint((raw.pixels.astype(np.float64) - cal.offset) * cal.gain), 0, 65535)
    out[raw.pixels == 65535] = 65535
    return out


def test_maps_kept_as_uint16_in_half_the_bytes(cal4: CalibrationSet) -> None:
    corrector = Corrector(cal4)
    maps = corrector.maps
    assert (maps.offset_q.dtype, maps.gain_q.dtype) == (np.uint16, np.uint16)
    assert maps.nbytes == cal4.offset.nbytes // 2 + cal4.gain.nbytes // 2
    assert corrector.resident_bytes < 0.55 * (cal4.offset.nbytes + cal4.gain.nbytes)
    assert not hasattr(corrector.cal, "offset") and not hasattr(corrector.cal, "gain")  # the set's maps not held


def test_decoded_maps_within_half_a_step_of_the_set(cal4: CalibrationSet) -> None:
    maps = Corrector(cal4).maps
    good = cal4.defects == DefectClass.GOOD
    offset_err = np.abs(maps.offset()[good].astype(np.float64) - cal4.offset[good])
    assert maps.offset_step <= 2.0 ** -6  # a realistic offset range leaves room for 6+ fractional bits
    assert offset_err.max() <= maps.offset_step / 2 + 1e-6
    gain_rel = np.abs(maps.gain()[good].astype(np.float64) / cal4.gain[good] - 1)
    assert gain_rel.max() <= 2.0 ** -15


def test_corrected_frames_match_float32_maps_within_a_count(panel4: Panel, cal4: CalibrationSet) -> None:
    corrector = Corrector(cal4)
    good = cal4.defects == DefectClass.GOOD
    for kerma in (0.5, 10.0, 150.0):  # from the noise floor to near full scale
        raw = panel4.frame(kerma)
        diff = np.abs(corrector.apply(raw).pixels[good].astype(np.int64) - _reference(raw, cal4)[good])
        assert diff.max() <= 1, (kerma, int(diff.max()))
        # A count either way where the value sat near .5: at most a relative 5e-6 of the value,
        # so a few % of the pixels at 4000 counts and a fifth at 60000 (noise SD there: 490 counts).
        assert diff.mean() < 0.01 + 4e-6 * kerma * 400, (kerma, float(diff.mean()))


def test_ranges_fixed_point_cannot_hold_stay_float32(make_panel: Callable[..., Panel]) -> None:
    """Offsets spread over more than 16383 counts, or gains from 0.05 to 20: kept as float32, exact."""
    panel = make_panel("8x8")
    cal = panel.calibrate(4, 4)
    good = cal.defects == DefectClass.GOOD
    offset = np.array(cal.offset)
    offset[good.nonzero()[0][0], good.nonzero()[1][0]] = 30000.0
    gain = np.array(cal.gain)
    gain[good.nonzero()[0][1], good.nonzero()[1][1]] = 0.06
    wide = dataclasses.replace(cal, offset=offset, gain=gain)
    corrector = Corrector(wide)
    assert (corrector.maps.offset_q.dtype, corrector.maps.gain_q.dtype) == (np.float32, np.float32)
    raw = panel.frame(10.0)
    diff = np.abs(corrector.apply(raw).pixels[good].astype(np.int64) - _reference(raw, wide)[good])
    assert diff.max() <= 1 and diff.mean() < 0.01  # float32 maps: the kernel's float32 rounding only
