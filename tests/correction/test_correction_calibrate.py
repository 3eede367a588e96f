"""calibrate(): maps measured against the simulator's ground truth, and bad input refused."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import datetime

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from gateway.correction import CalibrationSet, DefectClass, calibrate
from gateway.correction.calibrate import local_median
from gateway.errors import CalibrationError
from gateway.types import CalibrationKey, FrameKind, RawFrame, Technique
from tests.correction.conftest import CAL_TIME, FLAT_KERMA_UGY, Panel

CLASSES = {"dead": DefectClass.DEAD, "hot": DefectClass.HOT, "over": DefectClass.OVER,
           "under": DefectClass.UNDER, "noisy": DefectClass.NOISY, "lag": DefectClass.LAG,
           "line": DefectClass.LINE, "cluster": DefectClass.CLUSTER}


def test_offset_map_matches_truth(panel4: Panel, cal4: CalibrationSet) -> None:
    truth = panel4.model.truth
    ok = ~truth.defective
    err = cal4.offset[ok] - truth.offset[ok]
    rms = float(np.sqrt(np.mean(err**2)))
    print(f"\noffset map error vs truth: rms {rms:.2f} counts, mean {err.mean():+.3f}, "
          f"max |err| {np.abs(err).max():.1f}")
    # 16 darks of read noise 6 counts: the mean has an error of 6 / sqrt(16) = 1.5 counts.
    assert rms < 1.5 * 1.1
    assert abs(float(err.mean())) < 0.1


def test_gain_map_matches_truth(panel4: Panel, cal4: CalibrationSet) -> None:
    truth = panel4.model.truth
    ok = cal4.defects == DefectClass.GOOD
    # The calibration's gain is the inverse of the true relative gain (up to normalisation).
    rel = (1.0 / cal4.gain[ok]) / truth.gain[ok]
    spread = float(rel.std() / rel.mean())
    print(f"\ngain map: relative error {100 * spread:.2f} % (pixel SD)")
    assert spread < 0.015  # 8 flats of ~4000 counts: quantum noise 126 / sqrt(8) = 1.1 %


def test_defects_found_per_class(panel4: Panel, cal4: CalibrationSet) -> None:
    truth = panel4.model.truth
    lines = []
    for name, code in CLASSES.items():
        true = getattr(truth, name)
        found = cal4.defects == code
        hits = int(np.count_nonzero(true & found))
        recall = hits / max(int(true.sum()), 1)
        precision = hits / max(int(found.sum()), 1)
        lines.append(f"{name}: truth {int(true.sum())}, found {int(found.sum())}, "
                     f"recall {recall:.3f}, precision {precision:.3f}")
        assert recall >= 0.95, lines[-1]
        assert precision >= 0.95, lines[-1]
    any_recall = np.count_nonzero(truth.defective & (cal4.defects != 0)) / truth.defective.sum()
    false = int(np.count_nonzero(~truth.defective & (cal4.defects != 0)))
    print("\n" + "\n".join(lines) + f"\nany class: recall {any_recall:.3f}, good pixels flagged {false}")
    assert any_recall >= 0.99
    assert cal4.provenance["defect_counts"] == cal4.defect_counts()


def test_calibration_identity_and_provenance(panel4: Panel, cal4: CalibrationSet) -> None:
    assert cal4.key == CalibrationKey("SIM-0001", "4x4")
    assert re.fullmatch(r"SIM-0001-4x4-20250301T080000000000Z-[0-9a-f]{8}", cal4.calibration_id)
    assert cal4.created_at == CAL_TIME
    assert cal4.offset.dtype == np.float32 and cal4.gain.dtype == np.float32 and cal4.defects.dtype == np.uint8
    assert not cal4.offset.flags.writeable
    assert cal4.counts_per_ugy == pytest.approx(panel4.model.counts_per_ugy, rel=0.01)
    assert cal4.temperature_c == pytest.approx(30.0)
    prov = cal4.provenance
    assert len(prov["dark_frames"]) == 16 and len(prov["flat_frames"]) == 8
    assert prov["flat_kerma_ugy"] == FLAT_KERMA_UGY
    assert prov["operator"] == "test engineer"
    assert str(prov["software"]).startswith("dxgate ")
    with pytest.raises(TypeError):
        prov["operator"] = "someone else"  # type: ignore[index]


def test_technique_recorded_and_id_unique(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel()
    darks, flats = panel.darks(2), panel.flats(2)
    a = calibrate(darks, flats, flat_kerma_ugy=10, technique=Technique(kvp=70, mas=2), now=CAL_TIME)
    b = calibrate(darks, flats[:1] + panel.flats(1), flat_kerma_ugy=10, now=CAL_TIME)
    assert a.provenance["technique"] == {"kvp": 70, "mas": 2}
    assert a.calibration_id != b.calibration_id


def test_local_median_close_to_exact_21x21() -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:120, 0:120].astype(np.float32)
    smooth = 4000 * (1 - 0.1 * ((yy - 60) ** 2 + (xx - 60) ** 2) / 3600) * (1 + 0.03 * rng.standard_normal((120, 120)))
    smooth = smooth.astype(np.float32)
    smooth[rng.random((120, 120)) < 0.002] = 0  # sparse dead pixels do not pull the median
    exact = np.median(sliding_window_view(np.pad(smooth, 10, mode="reflect"), (21, 21)), axis=(2, 3))
    approx = local_median(smooth)
    rel = np.abs(approx - exact) / exact
    assert float(rel.max()) < 0.02
    assert float(rel.mean()) < 0.005


def test_line_defect(make_panel: Callable[..., Panel]) -> None:
    """A row with most pixels dead becomes a line defect: its good-looking pixels are flagged too."""
    panel = make_panel()
    row = 100
    dead_cols = np.arange(0, panel.model.columns) % 5 != 0  # 80 % of the row

    def broken(f: RawFrame) -> RawFrame:
        px = f.pixels.copy()
        px[row, dead_cols] = panel.model.truth.offset[row, dead_cols].astype(np.uint16)
        return RawFrame(pixels=px, meta=f.meta)

    cal = calibrate(panel.darks(4), [broken(f) for f in panel.flats(4)], flat_kerma_ugy=10, now=CAL_TIME)
    assert np.all(cal.defects[row] != DefectClass.GOOD)
    assert np.count_nonzero(cal.defects[row] == DefectClass.LINE) >= 0.15 * panel.model.columns
    assert np.count_nonzero(cal.defects[row + 1] != DefectClass.GOOD) < 10


# --- refusals ---------------------------------------------------------------------------------------------


def test_refuses_mixed_serials(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel()
    flats = panel.flats(2) + [panel.frame(10.0, serial="SIM-0002")]
    with pytest.raises(CalibrationError, match=r"serial SIM-0002.*serial SIM-0001"):
        calibrate(panel.darks(2), flats, flat_kerma_ugy=10)


def test_refuses_mixed_modes_and_geometry(make_panel: Callable[..., Panel]) -> None:
    panel, other = make_panel("8x8"), make_panel("4x4")
    with pytest.raises(CalibrationError, match=r"mode 4x4 768x768"):
        calibrate(panel.darks(2) + other.darks(1), panel.flats(2), flat_kerma_ugy=10)
    with pytest.raises(CalibrationError, match=r"mode 2x2"):
        calibrate(panel.darks(2), panel.flats(1) + [panel.frame(10.0, mode="2x2")], flat_kerma_ugy=10)


def test_refuses_wrong_kinds(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel()
    with pytest.raises(CalibrationError, match=r"dark frame \d+ is a exposed frame, expected dark"):
        calibrate(panel.darks(2) + panel.flats(1), panel.flats(2), flat_kerma_ugy=10)
    with pytest.raises(CalibrationError, match=r"flat-field frame \d+ is a dark frame, expected exposed"):
        calibrate(panel.darks(2), panel.flats(2) + panel.darks(1), flat_kerma_ugy=10)


def test_refuses_too_few_frames(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel()
    with pytest.raises(CalibrationError, match="at least 2 dark frames, got 1"):
        calibrate(panel.darks(1), panel.flats(2), flat_kerma_ugy=10)
    with pytest.raises(CalibrationError, match="at least 2 flat-field frames, got 0"):
        calibrate(panel.darks(2), [], flat_kerma_ugy=10)


def test_refuses_flats_without_signal(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel()
    # "Exposed" frames that saw no X-rays (beam off): marked EXPOSED but dark.
    blank = [panel.frame(0.0, kind=FrameKind.EXPOSED) for _ in range(2)]
    with pytest.raises(CalibrationError, match="no X-ray signal.*beam on"):
        calibrate(panel.darks(2), blank, flat_kerma_ugy=10)


def test_refuses_saturated_flats(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel()
    with pytest.raises(CalibrationError, match=r"flat-field frame \d+ is saturated"):
        calibrate(panel.darks(2), panel.flats(2, kerma_ugy=200.0), flat_kerma_ugy=200)


def test_refuses_flats_of_different_dose(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel()
    flats = panel.flats(3) + panel.flats(1, kerma_ugy=1.0)
    with pytest.raises(CalibrationError, match="one technique"):
        calibrate(panel.darks(2), flats, flat_kerma_ugy=10)


def test_refuses_bad_kerma_and_naive_time(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel()
    darks, flats = panel.darks(2), panel.flats(2)
    with pytest.raises(CalibrationError, match="flat_kerma_ugy"):
        calibrate(darks, flats, flat_kerma_ugy=0)
    with pytest.raises(CalibrationError, match="no time zone"):
        calibrate(darks, flats, flat_kerma_ugy=10, now=datetime(2025, 1, 1))


def test_calibration_set_validates_its_maps(cal4: CalibrationSet) -> None:
    with pytest.raises(CalibrationError, match="shapes differ"):
        dataclasses.replace(cal4, gain=np.ones((10, 10), np.float32))
    with pytest.raises(CalibrationError, match="float32"):
        dataclasses.replace(cal4, offset=cal4.offset.astype(np.float64))
    with pytest.raises(CalibrationError, match="unknown class codes"):
        dataclasses.replace(cal4, defects=np.full(cal4.shape, 99, np.uint8))
