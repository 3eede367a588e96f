"""Every ASTM E2597 defect class the simulator plants is found (recall >= 99.5 %, precision >= 99 %),
repaired from good neighbours only, and the corrected flat is uniform (TG-150 GNU <= 1 %)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.correction import CalibrationSet, Corrector, DefectClass
from gateway.correction.apply import repair_tables
from gateway.qa import uniformity
from tests.correction.conftest import Panel

CLASSES = {"dead": DefectClass.DEAD, "hot": DefectClass.HOT, "over": DefectClass.OVER, "under": DefectClass.UNDER,
           "noisy": DefectClass.NOISY, "lag": DefectClass.LAG, "line": DefectClass.LINE,
           "cluster": DefectClass.CLUSTER}


def test_recall_and_precision_per_class(panel2: Panel, cal2: CalibrationSet) -> None:
    truth = panel2.model.truth
    report = []
    for name, code in CLASSES.items():
        true, found = getattr(truth, name), cal2.defects == code
        hits = int(np.count_nonzero(true & found))
        recall, precision = hits / int(true.sum()), hits / max(int(found.sum()), 1)
        report.append((name, int(true.sum()), int(found.sum()), recall, precision))
    print("\n" + "\n".join(f"{n:8} truth {t:5} found {f:5} recall {r:.4f} precision {p:.4f}"
                           for n, t, f, r, p in report))
    for name, true_n, _, recall, precision in report:
        assert true_n >= 100, f"{name}: too few planted to measure"
        assert recall >= 0.995, f"{name}: recall {recall:.4f}"
        assert precision >= 0.99, f"{name}: precision {precision:.4f}"


def test_clusters_counted_with_their_sizes(panel2: Panel, cal2: CalibrationSet) -> None:
    truth = panel2.model.truth
    sizes = sorted(len(c) for c in truth.clusters)
    clusters = cal2.provenance["clusters"]
    assert isinstance(clusters, dict)
    assert clusters["count"] == len(sizes)
    assert clusters["largest"] == max(sizes)
    assert clusters["sizes"] == {str(s): sizes.count(s) for s in sorted(set(sizes))}


def test_lag_reported(cal2: CalibrationSet) -> None:
    """The simulated panel has no lag outside its lag pixels: the measured median lag is ~0."""
    lag = cal2.provenance["lag_median_fraction"]
    assert isinstance(lag, float) and abs(lag) < 0.002


def test_lines_and_clusters_repaired_across_from_nearest_good_pixels(cal2: CalibrationSet) -> None:
    index, neighbours, weights = repair_tables(cal2.defects)
    cols = cal2.shape[1]
    good = cal2.defects.reshape(-1) == DefectClass.GOOD
    for code in (DefectClass.LINE, DefectClass.CLUSTER):
        rows = np.nonzero(cal2.defects.reshape(-1)[index] == code)[0]
        assert rows.size
        for i in rows:
            used = neighbours[i][weights[i] > 0]
            assert used.size and good[used].all()  # good neighbours only
            y, x = divmod(int(index[i]), cols)
            ny, nx = np.divmod(used, cols)
            assert np.all((ny == y) | (nx == x))  # along its row or column
            assert float(weights[i].sum()) == pytest.approx(1.0)
    # A pixel in the middle of a column line takes the nearest good columns on both sides, same row.
    line = np.argwhere(cal2.defects == DefectClass.LINE)
    vertical = [(y, x) for y, x in line if cal2.defects[y - 1, x] == cal2.defects[y + 1, x] == DefectClass.LINE
                and cal2.defects[y, x - 1] == cal2.defects[y, x + 1] == DefectClass.GOOD]
    assert vertical
    y, x = vertical[len(vertical) // 2]
    i = int(np.nonzero(index == y * cols + x)[0][0])
    assert sorted(neighbours[i][weights[i] > 0].tolist()) == [y * cols + x - 1, y * cols + x + 1]


def test_corrected_flat_global_nonuniformity_within_1_percent(panel2: Panel, cal2: CalibrationSet) -> None:
    raw = panel2.frame(25.0)
    corrected = Corrector(cal2).apply(raw).pixels
    after = uniformity(corrected)
    before = uniformity(raw.pixels.astype(np.float32) - cal2.offset)
    # Independently: ROI means of the central 15 x 15 grid of 100 x 100 squares (1536 = 15 * 100 + 36).
    rois = corrected[18:1518, 18:1518].astype(np.float64).reshape(15, 100, 15, 100).mean(axis=(1, 3))
    direct = float((rois.max() - rois.min()) / rois.mean())
    print(f"\nTG-150 global signal non-uniformity: before {100 * before.global_signal:.2f} %, after "
          f"{100 * after.global_signal:.3f} % (direct {100 * direct:.3f} %); local after "
          f"{100 * after.local_signal:.3f} %")
    assert after.global_signal == pytest.approx(direct, rel=1e-9)
    assert before.global_signal > 0.05
    assert after.global_signal <= 0.01
    truth = panel2.model.truth
    repaired = corrected[truth.defective].astype(np.float64)
    good = corrected[~truth.defective].astype(np.float64)
    assert abs(repaired.mean() / good.mean() - 1) < 0.01  # repaired pixels carry the flat's level


def test_crossing_lines_repaired_from_the_ring() -> None:
    """Where a row line crosses a column line nothing good lies along either: the diagonals serve."""
    defects = np.zeros((80, 80), np.uint8)
    defects[10:70, 40] = DefectClass.LINE
    defects[30, 5:75] = DefectClass.LINE
    index, neighbours, weights = repair_tables(defects)
    i = int(np.nonzero(index == 30 * 80 + 40)[0][0])
    used = sorted(neighbours[i][weights[i] > 0].tolist())
    assert used == [29 * 80 + 39, 29 * 80 + 41, 31 * 80 + 39, 31 * 80 + 41]
