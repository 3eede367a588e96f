"""TG-150 figures checked against a plain computation, and pass/fail against the limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from gateway.correction import CalibrationSet, Corrector, DefectClass
from gateway.qa import QaLimits, evaluate, uniformity
from gateway.qa.report import largest_cluster
from gateway.qa.uniformity import local_nonuniformity
from tests.correction.conftest import Panel

WHEN = datetime(2025, 3, 2, 9, 0, tzinfo=UTC)


def test_global_and_local_figures_of_a_known_image() -> None:
    """ROI means 1000 everywhere, one ROI at 1030: GNU 3 %; that ROI is 3 % above its neighbours."""
    rng = np.random.default_rng(2)
    img = 1000 + rng.normal(0, 1e-3, (500, 400))
    img[200:300, 100:200] += 30  # ROI (2, 1) of the 5 x 4 grid
    u = uniformity(img)
    assert u.roi_grid == (5, 4)
    assert u.global_signal == pytest.approx(30 / (1000 + 30 / 20), rel=1e-4)
    assert u.local_signal == pytest.approx(0.03, rel=1e-3)
    values = np.ones((3, 3))
    values[0, 0] = 2.0  # corner: its 3 neighbours are 1
    assert local_nonuniformity(values) == pytest.approx(1.0)


def test_largest_cluster_ignores_lines() -> None:
    defects = np.zeros((50, 50), np.uint8)
    defects[:, 10] = DefectClass.LINE
    defects[20:23, 30:32] = DefectClass.CLUSTER
    defects[40, 40] = DefectClass.DEAD
    assert largest_cluster(defects) == 6


def test_report_passes_corrected_and_fails_uncorrected(panel4: Panel, cal4: CalibrationSet) -> None:
    raw = [panel4.frame(10.0) for _ in range(2)]
    corrected = [Corrector(cal4).apply(f).pixels for f in raw]
    good = evaluate(corrected, cal4, QaLimits(), made_at=WHEN)
    assert good.passed, good.to_text()
    doc = json.loads(json.dumps(good.to_dict()))
    assert doc["passed"] is True and doc["defect_counts"] == cal4.defect_counts()
    assert doc["largest_cluster"] == max(len(c) for c in panel4.model.truth.clusters)
    bad = evaluate([f.pixels.astype(np.float32) - cal4.offset for f in raw], cal4, QaLimits(), made_at=WHEN)
    failed = {c.name for c in bad.checks if not c.passed}
    assert "global signal nonuniformity" in failed and not bad.passed
    assert "RESULT: FAIL" in bad.to_text()
    strict = evaluate(corrected, cal4, QaLimits(max_cluster_pixels=1), made_at=WHEN)
    assert [c.name for c in strict.checks if not c.passed] == ["largest cluster (pixels)"]


def test_linearity_figures_and_check() -> None:
    from gateway.qa import linearity

    flat = np.full((40, 40), 1.0)
    straight = linearity([(1.0, 1000 * flat), (2.0, 2000 * flat), (4.0, 4000 * flat)])
    assert straight.counts_per_mas == pytest.approx(1000) and straight.max_deviation == pytest.approx(0, abs=1e-12)
    assert straight.r_squared == pytest.approx(1.0)
    bent = linearity([(1.0, 1000 * flat), (2.0, 2000 * flat), (4.0, 3400 * flat)])  # saturating response
    slope = (1000 + 4000 + 4 * 3400) / 21
    assert bent.counts_per_mas == pytest.approx(slope)
    assert bent.max_deviation == pytest.approx(max(abs(1000 / slope - 1), abs(3400 / (4 * slope) - 1)))
    assert bent.max_deviation > 0.05
    with pytest.raises(ValueError, match="two doses"):
        linearity([(1.0, flat), (1.0, flat)])


def test_nonlinear_response_fails_the_report(panel4: Panel, cal4: CalibrationSet) -> None:
    from gateway.qa import linearity

    flat = Corrector(cal4).apply(panel4.frame(10.0)).pixels
    bent = linearity([(1.0, flat * 0.5), (2.0, flat.astype(np.float64)), (4.0, flat * 1.6)])
    report = evaluate([flat], cal4, QaLimits(), made_at=WHEN, linearity=bent)
    assert [c.name for c in report.checks if not c.passed] == ["linearity deviation"]
    assert "linearity: 1 mAs" in report.to_text()
