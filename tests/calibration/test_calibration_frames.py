"""Offset from a robust mean of the darks, darks that saw light refused, each flat checked before
it is used (count window, object in the beam), a refused flat taken again."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from gateway.correction import CalibrationBuilder, CalibrationLimits, calibrate
from gateway.errors import CalibrationError
from gateway.types import RawFrame
from tests.correction.conftest import CAL_TIME, Panel


def _edited(frame: RawFrame, edit: Callable[[np.ndarray], None]) -> RawFrame:
    px = frame.pixels.astype(np.int64)
    edit(px)
    return RawFrame(pixels=np.clip(px, 0, 65535).astype(np.uint16), meta=frame.meta)


def test_offset_ignores_a_spike_in_one_dark(make_panel: Callable[..., Panel]) -> None:
    """A cosmic or a readout glitch in one of the darks leaves the offset map at its true value."""
    panel = make_panel("8x8", seed=3)
    truth = panel.model.truth
    good = ~truth.defective
    ys, xs = np.nonzero(good)
    hit = (ys[::50], xs[::50])

    def spike(px: np.ndarray) -> None:
        px[hit] += 3000

    darks = panel.darks(8)
    darks[3] = _edited(darks[3], spike)
    builder = CalibrationBuilder()
    for f in darks:
        builder.add_dark(f)
    builder.darks_done()
    assert builder.offset is not None and builder.dark_sd is not None
    err = builder.offset[hit] - truth.offset[hit]
    print(f"\noffset error at {hit[0].size} spiked pixels: max |err| {np.abs(err).max():.1f} counts")
    assert np.abs(err).max() < 6 * panel.model.read_noise / np.sqrt(6)  # within noise of 6 frames
    assert np.median(builder.dark_sd[hit]) < 2 * panel.model.read_noise  # not made noisy either


def test_darks_that_saw_light_refused(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel("8x8")
    darks = panel.darks(6)

    def light(px: np.ndarray) -> None:
        px += 150

    darks[4] = _edited(darks[4], light)
    with pytest.raises(CalibrationError, match=rf"dark frame {darks[4].meta.frame_number} is 1[45]\d\.\d counts "
                                               r"brighter .*light reached the panel.*repeat the dark frames"):
        calibrate(darks, panel.flats(2), flat_kerma_ugy=10)
    all_lit = [_edited(f, light) for f in panel.darks(4)]
    with pytest.raises(CalibrationError, match=r"dark frames read \d+ counts \(limit 900\).*repeat the dark"):
        calibrate(all_lit, panel.flats(2), flat_kerma_ugy=10, limits=CalibrationLimits(dark_mean_max=900))


def test_flat_outside_count_window_refused(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel("8x8")
    with pytest.raises(CalibrationError, match=r"median signal \d+ counts above offset, outside the window "
                                               r"500\.\.45000: adjust the mAs \(more\) and repeat this flat"):
        calibrate(panel.darks(2), panel.flats(2, kerma_ugy=0.5), flat_kerma_ugy=0.5)


def test_object_in_beam_refused(make_panel: Callable[..., Panel]) -> None:
    panel = make_panel("4x4")
    flat = panel.frame(10.0)

    def coin(px: np.ndarray) -> None:  # a 40-pixel disc absorbing 30 % of the beam
        yy, xx = np.mgrid[0:px.shape[0], 0:px.shape[1]]
        disc = (yy - 300) ** 2 + (xx - 500) ** 2 < 20 ** 2
        px[disc] -= (0.3 * (px[disc] - 1000)).astype(np.int64)

    with pytest.raises(CalibrationError, match=r"near row 3\d\d, column [45]\d\d differs by \d+ % .*object in "
                                               r"the beam.*repeat this flat"):
        calibrate(panel.darks(2), [panel.frame(10.0), _edited(flat, coin)], flat_kerma_ugy=10)


def test_refused_flat_leaves_builder_unchanged(make_panel: Callable[..., Panel]) -> None:
    """The workflow takes a refused flat again: the refused one must not count nor leave a trace."""
    panel = make_panel("8x8")
    builder = CalibrationBuilder()
    for f in panel.darks(4):
        builder.add_dark(f)
    builder.darks_done()
    builder.add_flat(panel.frame(10.0))
    with pytest.raises(CalibrationError, match="one technique"):
        builder.add_flat(panel.frame(20.0))
    builder.add_flat(panel.frame(10.0))
    cal = builder.build(flat_kerma_ugy=10.0, now=CAL_TIME)
    assert builder.counts == {"dark": 4, "flat-field": 2, "lag dark": 0}
    assert len(cal.provenance["flat_frames"]) == 2  # type: ignore[arg-type]
    assert cal.counts_per_ugy == pytest.approx(panel.model.counts_per_ugy, rel=0.02)
