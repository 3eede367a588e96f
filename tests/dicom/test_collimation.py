"""The collimated field found in corrected frames of the simulated panel equals the field the
simulator was given (its ground truth, in the mode's pixels), whatever the scene behind it."""

from __future__ import annotations

import itertools
from datetime import timedelta

import numpy as np
import pytest

from gateway.collimation import CollimatedField, detect_field
from gateway.correction import Corrector
from gateway.dicom.dx import NO_BEAM_UGY
from gateway.types import FrameKind, FrameMeta, RawFrame
from hw_sim.collimation import Field
from hw_sim.detector_model import BITS_STORED, MODES, DetectorModel
from tests.correction.conftest import CAL_TIME, Panel

COUNTS_PER_UGY = 400.0  # the simulated panel's sensitivity (the calibration measures it)

MODE = "4x4"
FIELDS = [(0.2, 0.15, 0.8, 0.9), (0.0, 0.3, 0.6, 1.0), (0.45, 0.05, 0.55, 0.95), (0.1, 0.48, 0.9, 0.52)]
_numbers = itertools.count(1000)


@pytest.fixture(scope="module")
def panel() -> tuple[Panel, Corrector]:
    p = Panel(DetectorModel(MODE, seed=13))
    return p, Corrector(p.calibrate(n_darks=8, n_flats=4))


def corrected(panel: tuple[Panel, Corrector], kerma_ugy: float, scene: str, field: Field | None) -> np.ndarray:
    p, corrector = panel
    n = next(_numbers)
    meta = FrameMeta(frame_number=n, detector_serial=p.serial, mode=MODE, rows=p.model.rows, columns=p.model.columns,
                     bits_stored=BITS_STORED, kind=FrameKind.EXPOSED if kerma_ugy else FrameKind.DARK,
                     temperature_c=p.model.temperature_c, acquired_at=CAL_TIME + timedelta(seconds=n), crc32=0)
    return corrector.apply(RawFrame(pixels=p.model.frame(kerma_ugy, scene, field), meta=meta)).pixels


def detect(pixels: np.ndarray) -> CollimatedField | None:
    return detect_field(pixels, NO_BEAM_UGY * COUNTS_PER_UGY)


@pytest.mark.parametrize("scene", ["open", "chest", "hand", "qc"])
@pytest.mark.parametrize("fractions", FIELDS)
@pytest.mark.parametrize("kerma_ugy", [1.5, 10.0])
def test_the_field_found_is_the_simulators(panel: tuple[Panel, Corrector], scene: str,
                                           fractions: tuple[float, float, float, float], kerma_ugy: float) -> None:
    p, _ = panel
    field = Field.from_fractions(*fractions, panel_mm=p.model.rows * MODES[MODE][2])
    truth = field.pixels(p.model.rows, MODES[MODE][2])  # first row, end row, first column, end column
    assert detect(corrected(panel, kerma_ugy, scene, field)) == CollimatedField(*truth)


@pytest.mark.parametrize("scene", ["open", "chest", "hand", "qc"])
def test_an_open_collimator_gives_the_whole_image(panel: tuple[Panel, Corrector], scene: str) -> None:
    p, _ = panel
    assert detect(corrected(panel, 5.0, scene, None)) == CollimatedField(0, p.model.rows, 0, p.model.columns)


def test_a_frame_without_beam_has_no_field(panel: tuple[Panel, Corrector]) -> None:
    assert detect(corrected(panel, 0.0, "open", None)) is None


def test_dicom_edges_count_pixels_from_one_inclusive() -> None:
    assert CollimatedField(first_row=10, end_row=20, first_column=3, end_column=7).dicom_edges() == (4, 7, 11, 20)


def test_a_repaired_defect_line_beside_a_blade_stays_outside(panel: tuple[Panel, Corrector]) -> None:
    """Defect repair averages a bad line's neighbours, the field's among them: a segment next to
    a blade comes out half-bright, which is not beam."""
    p, _ = panel
    field = Field.from_fractions(*FIELDS[0], panel_mm=p.model.rows * MODES[MODE][2])
    r0, r1, c0, c1 = field.pixels(p.model.rows, MODES[MODE][2])
    px = corrected(panel, 5.0, "chest", field).copy()
    px[r0:r0 + 60, c0 - 1] = px[r0:r0 + 60, c0] // 2
    px[r1, c0 + 20:c0 + 120] = px[r1 - 1, c0 + 20:c0 + 120] // 2
    assert detect(px) == CollimatedField(r0, r1, c0, c1)
