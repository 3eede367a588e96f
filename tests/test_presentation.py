"""Presentation processing (gateway.presentation) on synthetic frames whose content is known:
a detail of known contrast in a thin and in a dense part, a step wedge, pure noise and an edge."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.errors import DxgateError
from gateway.presentation import PresentationParams, present

SPACING = (0.139, 0.139)


def phantom(seed: int = 3) -> tuple[np.ndarray, list[tuple[slice, slice, slice, slice]]]:
    """Left half thin (high dose), right half dense (a tenth of it), each with a disc 3 % darker;
    returns the frame and, per disc, (rows, cols) of the disc and of a ring of background beside it."""
    rng = np.random.default_rng(seed)
    n = 768
    dose = np.full((n, n), 20000.0)
    dose[:, n // 2:] = 2000.0
    yy, xx = np.mgrid[:n, :n]
    regions = []
    for cx in (n // 4, 3 * n // 4):
        disc = (yy - n // 2) ** 2 + (xx - cx) ** 2 < 20 ** 2
        dose[disc] *= 0.97
        regions.append((slice(n // 2 - 10, n // 2 + 10), slice(cx - 10, cx + 10),
                        slice(n // 2 - 10, n // 2 + 10), slice(cx + 40, cx + 60)))
    frame = rng.poisson(dose).clip(0, 65535).astype(np.uint16)
    return frame, regions


def detail_contrast(img: np.ndarray, window: float, r: tuple[slice, slice, slice, slice]) -> float:
    """The disc's contrast against the background beside it, as a fraction of the display window."""
    return abs(float(img[r[2], r[3]].mean()) - float(img[r[0], r[1]].mean())) / window


def test_a_small_detail_gets_a_larger_share_of_the_window_in_thin_and_dense_parts() -> None:
    frame, regions = phantom()
    lo, hi = np.percentile(frame[192:-192, 192:-192], (1, 99))  # the linear image through one window
    shown = present(frame, pixel_spacing_mm=SPACING)
    assert shown.bits_stored == 12 and shown.pixels.dtype == np.uint16 and shown.pixels.max() <= 4095
    slo, shi = np.percentile(shown.pixels[192:-192, 192:-192], (1, 99))
    thin, dense = (detail_contrast(shown.pixels, shi - slo, r) / detail_contrast(frame, hi - lo, r) for r in regions)
    assert thin > 1.5 and dense > 8  # measured 1.9x and 14x: one window no longer spans a factor of ten


def test_deterministic_and_never_inverts_a_step_wedge() -> None:
    steps = np.repeat(np.geomspace(500, 40000, 8), 96)  # 8 steps of dose, left to right
    frame = np.tile(steps, (768, 1)).astype(np.uint16)
    a = present(frame, pixel_spacing_mm=SPACING).pixels
    b = present(frame.copy(), pixel_spacing_mm=SPACING).pixels
    assert np.array_equal(a, b)
    means = [float(a[:, i * 96 + 32: i * 96 + 64].mean()) for i in range(8)]  # each step's centre
    assert means == sorted(means) and len(set(means)) == 8  # more X-rays stays brighter (higher value)


def test_noise_is_not_sharpened_but_an_edge_is() -> None:
    rng = np.random.default_rng(5)
    flat = rng.poisson(np.full((512, 512), 10000.0)).astype(np.uint16)
    plain = PresentationParams(equalize=0, contrast=0, edge_amount=0)
    sharp = PresentationParams(equalize=0, contrast=0, edge_amount=1.5, noise_coring=2.0)
    noise_plain = float(present(flat, pixel_spacing_mm=SPACING, params=plain).pixels.std())
    noise_sharp = float(present(flat, pixel_spacing_mm=SPACING, params=sharp).pixels.std())
    assert noise_sharp < 1.15 * noise_plain  # without coring a 1.5 gain raises it by ~50 %
    edge = np.where(np.arange(512)[None, :] < 256, 8000.0, 12000.0) * np.ones((512, 1))
    edged = rng.poisson(edge).astype(np.uint16)
    p = present(edged, pixel_spacing_mm=SPACING, params=plain).pixels.astype(float)
    s = present(edged, pixel_spacing_mm=SPACING, params=sharp).pixels.astype(float)

    def overshoot(img: np.ndarray) -> float:
        return float(img[:, 258:262].mean() - img[:, 300:400].mean())  # just past the edge vs the plateau
    assert overshoot(s) > overshoot(p) + 20  # the edge gets its unsharp-mask overshoot


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint16), np.zeros((64, 64), np.float32),
                                 np.zeros((2, 64, 64), np.uint16)])
def test_a_frame_it_cannot_process_is_refused(bad: np.ndarray) -> None:
    with pytest.raises(DxgateError, match="presentation needs a 2-D uint16 frame"):
        present(bad, pixel_spacing_mm=SPACING)
