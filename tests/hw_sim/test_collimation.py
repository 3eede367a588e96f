"""Collimation set through the control socket, seen through the real driver: outside the field
the panel sees scatter only (no trace of the object), the field's edges lie where configured."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hw_sim.collimation import SCATTER_FRACTION
from hw_sim.detector_model import MODES
from hw_sim.phantoms import transmission_map
from tests.hw_sim.imaging import MODE, bench

SIDE = MODES[MODE][1]
PITCH = MODES[MODE][2]
FRACTIONS = [0.25, 0.375, 0.75, 0.875]  # left, top, right, bottom: on pixel boundaries in every mode


def edges(profile: np.ndarray, threshold: float) -> tuple[int, int]:
    """First and one-past-last index where the profile is above threshold."""
    above = np.flatnonzero(profile > threshold)
    return int(above[0]), int(above[-1]) + 1


def test_outside_the_field_only_scatter_and_the_edges_where_configured(tmp_path: Path) -> None:
    with bench(tmp_path) as b:
        b.ctl.call("place", scene="qc")
        reply = b.ctl.call("collimate", fractions=FRACTIONS)
        assert reply["field_mm"] == pytest.approx([f * SIDE * PITCH for f in FRACTIONS])
        truth = b.ctl.call("truth", mode=MODE)["truth"]
        t = b.transmission(b.expose())
    left, top, right, bottom = (round(f * SIDE) for f in FRACTIONS)
    assert truth["field_pixels"] == [top, bottom, left, right]
    assert truth["scatter_fraction"] == SCATTER_FRACTION
    inside = np.zeros(t.shape, bool)
    inside[top:bottom, left:right] = True

    # Outside: scatter only, with no trace of the phantom. The step wedge (rows above the field)
    # would attenuate down to 0.04 of the plate; behind the collimator it reads as the open air.
    for step in truth["steps"]:
        r, c = step["rows"], step["columns"]
        assert r[1] <= top  # the wedge lies outside the field
        mean = float(np.nanmean(t[r[0] + 3:r[1] - 3, c[0] + 3:c[1] - 3]))
        assert mean == pytest.approx(SCATTER_FRACTION, rel=0.02), step
    outside = t[~inside & np.isfinite(t)]
    assert outside.mean() == pytest.approx(SCATTER_FRACTION, rel=0.01)
    # Inside: the phantom as it is, unchanged by the collimator.
    expected = transmission_map("qc", SIDE, PITCH)
    assert expected is not None
    ratio = t[inside] / expected[inside]
    assert float(np.nanmean(ratio)) == pytest.approx(1.0, abs=0.002)

    # The edges, found in the image, are where the fractions put them (independently computed).
    half = (SCATTER_FRACTION + 0.15) / 2  # between scatter and the darkest thing in the field
    rows_in = slice(top + 5, bottom - 5)
    cols_in = slice(left + 5, right - 5)
    assert edges(np.nanmedian(t[rows_in, :], axis=0), half) == (left, right)
    assert edges(np.nanmedian(t[:, cols_in], axis=1), half) == (top, bottom)


def test_collimate_in_mm_open_and_refused(tmp_path: Path) -> None:
    with bench(tmp_path) as b:
        mm = [100 * PITCH, 200 * PITCH, 1000 * PITCH, 1400 * PITCH]
        assert b.ctl.call("collimate", field_mm=mm)["field_mm"] == pytest.approx(mm)
        assert b.ctl.status()["field_mm"] == pytest.approx(mm)
        assert b.ctl.call("truth", mode=MODE)["truth"]["field_pixels"] == [200, 1400, 100, 1000]
        t = b.transmission(b.expose())
        assert float(np.nanmean(t[200:1400, 100:1000])) == pytest.approx(1.0, abs=0.002)
        assert float(np.nanmean(t[:190, :])) == pytest.approx(SCATTER_FRACTION, rel=0.02)
        with pytest.raises(RuntimeError, match="beyond"):
            b.ctl.call("collimate", field_mm=[0, 0, 500, 100])
        with pytest.raises(RuntimeError, match="not a rectangle"):
            b.ctl.call("collimate", field_mm=[50, 0, 10, 100])
        with pytest.raises(RuntimeError, match="fractions"):
            b.ctl.call("collimate", fractions=[0, 0, 1.5, 1])
        assert b.ctl.call("collimate")["field_mm"] is None
        assert b.ctl.status()["field_mm"] is None
        t = b.transmission(b.expose())
        assert math.isclose(float(np.nanmean(t)), 1.0, abs_tol=0.002)
