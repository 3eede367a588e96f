"""IEC 62494-1 exposure index against the known air kerma of simulated exposures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.correction import CalibrationSet, Corrector, exposure_index
from gateway.errors import CalibrationError, ConfigError
from gateway.types import CorrectedFrame
from tests.correction.conftest import Panel


@pytest.mark.parametrize("kerma_ugy", [0.5, 2.5, 10.0, 40.0])
def test_open_field_ei_is_100x_kerma(panel4: Panel, cal4: CalibrationSet, kerma_ugy: float) -> None:
    frame = Corrector(cal4).apply(panel4.frame(kerma_ugy))
    ei = exposure_index(frame, target_ei=250.0)
    print(f"\nopen field {kerma_ugy} uGy: EI {ei.ei:.1f} (ideal {100 * kerma_ugy:.0f}), DI {ei.deviation_index:+.2f}")
    assert ei.ei == pytest.approx(100 * kerma_ugy, rel=0.03)
    assert ei.target_ei == 250.0
    assert ei.deviation_index == pytest.approx(10 * math.log10(ei.ei / 250.0))


def test_deviation_index_sign(panel4: Panel, cal4: CalibrationSet) -> None:
    frame = Corrector(cal4).apply(panel4.frame(5.0))
    assert exposure_index(frame, 500.0).deviation_index == pytest.approx(0.0, abs=0.15)
    assert exposure_index(frame, 250.0).deviation_index == pytest.approx(3.0, abs=0.15)  # twice the target dose
    assert exposure_index(frame, 1000.0).deviation_index == pytest.approx(-3.0, abs=0.15)


def test_saturated_and_zero_pixels_excluded(panel4: Panel, cal4: CalibrationSet) -> None:
    frame = Corrector(cal4).apply(panel4.frame(2.0))
    px = frame.pixels.copy()
    px[300:330, 300:470] = 65535  # a burnt-out strip in the centre
    px[430:460, 300:470] = 0
    patched = CorrectedFrame(pixels=px, meta=frame.meta, calibration_id=frame.calibration_id,
                             calibrated_at=frame.calibrated_at, counts_per_ugy=frame.counts_per_ugy,
                             history=frame.history)
    assert exposure_index(patched, 200).ei == pytest.approx(200, rel=0.03)


def test_no_signal_and_bad_target_refused(panel4: Panel, cal4: CalibrationSet) -> None:
    frame = Corrector(cal4).apply(panel4.frame(2.0))
    blank = CorrectedFrame(pixels=np.zeros_like(frame.pixels), meta=frame.meta,
                           calibration_id=frame.calibration_id, calibrated_at=frame.calibrated_at,
                           counts_per_ugy=frame.counts_per_ugy, history=frame.history)
    with pytest.raises(CalibrationError, match="all zero or saturated"):
        exposure_index(blank, 400)
    with pytest.raises(ConfigError, match="target exposure index must be positive"):
        exposure_index(frame, 0)


def test_histogram_median_equals_numpy_median() -> None:
    from gateway.correction.exposure_index import median_between

    rng = np.random.default_rng(9)
    for n in (1, 2, 7, 1000, 100001):
        px = rng.integers(0, 4096, n).astype(np.uint16)
        px[: n // 3] = rng.choice([0, 4095], n // 3)
        kept = px[(px > 0) & (px < 4095)]
        got = median_between(px, 0, 4095)
        assert got == (float(np.median(kept)) if kept.size else None)
