"""A 1536 x 1536 panel with 0.2 % defects of every class, calibrated the way the workflow does it."""

from __future__ import annotations

import pytest

from gateway.correction import CalibrationSet, calibrate
from hw_sim.detector_model import DetectorModel
from tests.correction.conftest import CAL_TIME, FLAT_KERMA_UGY, Panel, make_panel

__all__ = ["make_panel"]  # the fixture, shared with tests/correction

N_DARKS, N_FLATS = 32, 16  # the workflow's defaults


@pytest.fixture(scope="package")
def panel2() -> Panel:
    return Panel(DetectorModel("2x2", seed=11, defect_fraction=0.002))


@pytest.fixture(scope="package")
def cal2(panel2: Panel) -> CalibrationSet:
    darks, flats = panel2.darks(N_DARKS), panel2.flats(N_FLATS)
    return calibrate(darks, flats, lag_darks=panel2.darks(1), flat_kerma_ugy=FLAT_KERMA_UGY,
                     operator="field engineer", now=CAL_TIME)
