"""Corrector: flat-field uniformity, defect repair and refusals, measured against simulator truth."""

from __future__ import annotations

import dataclasses
import threading
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from gateway.correction import CalibrationSet, Corrector, DefectClass, exposure_index
from gateway.correction.apply import repair_tables
from gateway.errors import CalibrationError
from tests.correction.conftest import Panel

TEST_KERMA_UGY = 25.0  # not the calibration's 10 uGy


def _roi_means(img: np.ndarray, roi: int = 100) -> np.ndarray:
    """Means of the whole roi x roi squares tiling the image (AAPM TG-150 uses 100 x 100 pixels)."""
    r, c = (img.shape[0] // roi) * roi, (img.shape[1] // roi) * roi
    return img[:r, :c].reshape(r // roi, roi, c // roi, roi).mean(axis=(1, 3))


def test_flat_field_uniformity(panel4: Panel, cal4: CalibrationSet) -> None:
    truth = panel4.model.truth
    good = ~truth.defective
    raw = panel4.frame(TEST_KERMA_UGY)
    corrected = Corrector(cal4).apply(raw).pixels.astype(np.float64)
    before = raw.pixels.astype(np.float64)
    offset_only = before - cal4.offset

    def cv(a: np.ndarray, mask: np.ndarray | None = None) -> float:
        v = a[mask] if mask is not None else a
        return float(v.std() / v.mean())

    roi_before, roi_after = _roi_means(offset_only), _roi_means(corrected)
    # Quantum noise alone (4 counts per quantum) plus the gain map's own noise (8 flats).
    signal = panel4.model.counts_per_ugy * TEST_KERMA_UGY
    floor = float(np.hypot(np.sqrt(4 * signal) / signal, 2 / np.sqrt(8 * panel4.model.counts_per_ugy * 10)))
    figures = {
        "pixel CV raw (good pixels)": cv(before, good),
        "pixel CV offset-subtracted (good pixels)": cv(offset_only, good),
        "pixel CV corrected (all pixels)": cv(corrected),
        "pixel CV floor (quantum + gain-map noise)": floor,
        "100x100 ROI-mean CV before": cv(roi_before),
        "100x100 ROI-mean CV after": cv(roi_after),
        "100x100 ROI-mean (max-min)/mean before": float(np.ptp(roi_before) / roi_before.mean()),
        "100x100 ROI-mean (max-min)/mean after": float(np.ptp(roi_after) / roi_after.mean()),
    }
    print(f"\nflat field at {TEST_KERMA_UGY:.0f} uGy:\n"
          + "\n".join(f"  {k}: {100 * v:.3f} %" for k, v in figures.items()))
    assert figures["pixel CV offset-subtracted (good pixels)"] > 0.05
    assert figures["pixel CV corrected (all pixels)"] < 1.05 * floor
    assert figures["100x100 ROI-mean CV before"] > 0.03
    assert figures["100x100 ROI-mean CV after"] < 0.001
    assert corrected.mean() == pytest.approx(signal, rel=0.01)


def test_repaired_pixels_are_not_outliers(panel4: Panel, cal4: CalibrationSet) -> None:
    truth = panel4.model.truth
    frame = Corrector(cal4).apply(panel4.frame(TEST_KERMA_UGY)).pixels.astype(np.float64)
    good = frame[~truth.defective]
    centre = float(np.median(good))
    sd = float(np.percentile(good, 84.13) - np.percentile(good, 15.87)) / 2
    z = np.abs(frame[truth.defective] - centre) / sd
    print(f"\nrepaired pixels ({truth.defective.sum()}): max |z| {z.max():.2f} vs good pixels' "
          f"max |z| {np.abs(good - centre).max() / sd:.2f}")
    # Line and cluster pixels come from two to four neighbours only: their noise is close to a good pixel's.
    assert float(z.max()) < min(4.0, float(np.abs(good - centre).max() / sd))
    assert np.all(frame[truth.hot] < 65535) and np.all(frame[truth.dead] > 0)


def test_corrected_frame_carries_calibration(panel4: Panel, cal4: CalibrationSet) -> None:
    raw = panel4.frame(5.0)
    out = Corrector(cal4).apply(raw)
    n_defects = int(np.count_nonzero(cal4.defects))
    assert out.history == (f"offset:{cal4.calibration_id}", f"gain:{cal4.calibration_id}",
                           f"defects:{n_defects} repaired")
    assert out.meta is raw.meta
    assert out.calibration_id == cal4.calibration_id
    assert out.calibrated_at == cal4.created_at
    assert out.counts_per_ugy == cal4.counts_per_ugy
    assert out.pixels.dtype == np.uint16 and not out.pixels.flags.writeable
    assert exposure_index(out, 500).ei == pytest.approx(500, rel=0.03)


def test_apply_allocates_only_its_output(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel("8x8")
    corrector = Corrector(panel.calibrate(4, 4))
    raw = panel.frame(10.0)
    corrector.apply(raw)
    tracemalloc.start()
    try:
        out = corrector.apply(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < out.pixels.nbytes + 64 * 1024, f"peak {peak} B for a {out.pixels.nbytes} B frame"


def test_clipping_and_rounding(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel("8x8")
    cal = panel.calibrate(4, 4)
    corrector = Corrector(cal)
    dark = corrector.apply(panel.frame(0.0)).pixels
    assert dark.min() == 0  # negative (raw below offset) clipped, not wrapped
    bright = corrector.apply(panel.frame(160.0)).pixels  # saturates the raw frame: 64000 counts + offset
    assert bright.max() == 65535


def test_saturated_raw_pixels_stay_saturated(make_panel: Callable[..., Panel]) -> None:
    """Gain must not turn a clipped raw pixel into a plausible value (it would fake the EI)."""
    panel = make_panel("8x8")
    corrector = Corrector(panel.calibrate(4, 4))
    raw = panel.frame(1000.0)  # far beyond full scale: every good pixel clips in the raw frame
    clipped = raw.pixels == 65535
    assert clipped.mean() > 0.99
    out = corrector.apply(raw).pixels
    assert (out[clipped] == 65535).all()
    with pytest.raises(CalibrationError, match="all zero or saturated"):
        exposure_index(corrector.apply(raw), target_ei=400.0)


def test_shared_between_threads(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel("8x8")
    corrector = Corrector(panel.calibrate(4, 4))
    frames = [panel.frame(k) for k in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]
    expected = [corrector.apply(f).pixels.copy() for f in frames]
    results: dict[int, np.ndarray] = {}

    def work(indices: range) -> None:
        for _ in range(5):
            for i in indices:
                results[i] = corrector.apply(frames[i]).pixels

    threads = [threading.Thread(target=work, args=(range(j, 6, 2),)) for j in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(results[i], want)


def test_refuses_other_serial_mode_geometry(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel("8x8")
    corrector = Corrector(panel.calibrate(2, 2))
    with pytest.raises(CalibrationError, match=r"from detector SIM-0002 mode 8x8.*for detector SIM-0001 mode 8x8"):
        corrector.apply(panel.frame(5.0, serial="SIM-0002"))
    with pytest.raises(CalibrationError, match=r"mode 4x4.*mode 8x8"):
        corrector.apply(panel.frame(5.0, mode="4x4"))
    other = make_panel("4x4").frame(5.0, mode="8x8")
    with pytest.raises(CalibrationError, match=r"is 768x768 pixels, calibration .* is 384x384"):
        corrector.apply(other)


def test_repair_uses_good_neighbours_only() -> None:
    defects = np.zeros((12, 12), np.uint8)
    defects[4:7, 4:7] = DefectClass.DEAD  # a 3x3 cluster: its centre has no good 3x3 neighbour
    defects[0, 0] = DefectClass.HOT  # a corner
    index, neighbours, weights = repair_tables(defects)
    assert index.size == 10
    for i, flat in enumerate(index):
        used = neighbours[i][weights[i] > 0]
        assert used.size and np.all(defects.reshape(-1)[used] == 0)
        assert weights[i][weights[i] > 0].sum() == pytest.approx(1.0)
        y, x = divmod(int(flat), 12)
        ny, nx = np.divmod(used, 12)
        radius = 2 if (y, x) == (5, 5) else 1
        assert np.max(np.maximum(abs(ny - y), abs(nx - x))) == radius
    assert neighbours.shape[1] == 16  # the cluster centre's 5x5 ring holds 16 good pixels


def test_unrepairable_cluster_refused(cal4: CalibrationSet) -> None:
    defects = np.array(cal4.defects)
    defects[100:115, 100:115] = DefectClass.DEAD
    bad = dataclasses.replace(cal4, defects=defects)
    with pytest.raises(CalibrationError, match="no good pixel within 11x11"):
        Corrector(bad)


def test_full_size_2x2(make_panel: Callable[..., Panel]) -> None:
    """The bench's geometry (1536 x 1536): calibrate from 2 + 2 frames, correct, check the EI."""
    panel = make_panel("2x2", seed=4)
    cal = panel.calibrate(2, 2)
    out = Corrector(cal).apply(panel.frame(4.0))
    truth = panel.model.truth
    found = np.count_nonzero(truth.defective & (cal.defects != 0)) / truth.defective.sum()
    assert found > 0.9  # noisy pixels are harder to see in 2 darks
    assert exposure_index(out, 400).ei == pytest.approx(400, rel=0.03)
    rois = _roi_means(out.pixels.astype(np.float64))
    assert float(rois.std() / rois.mean()) < 0.002


def test_raw_frames_stay_untouched(panel4: Panel, cal4: CalibrationSet) -> None:
    raw = panel4.frame(3.0)
    copy = raw.pixels.copy()
    Corrector(cal4).apply(raw)
    np.testing.assert_array_equal(raw.pixels, copy)
