"""The detector model's physics against its ground truth: scintillator blotches (the same place
in every mode), the kerma model's distance and filtration terms, cached synthesis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hw_sim.detector_model import BLOTCH_DEPTH, DetectorModel
from hw_sim.room import FILTRATION_MU_PER_MM_AL, kerma_at_detector_ugy


def test_blotches_dip_the_response_at_the_same_place_in_every_mode() -> None:
    coarse, fine = DetectorModel("8x8", seed=4), DetectorModel("4x4", seed=4)
    b8, b4 = coarse.truth.blotches, fine.truth.blotches
    assert b8.min() < 1 - BLOTCH_DEPTH[0] / 2 and b8.min() > 1 - 2 * max(BLOTCH_DEPTH)
    # The same blotches on the same millimetres: the 4x4 map averaged 2x2 is the 8x8 map.
    assert np.abs(b4.reshape(384, 2, 384, 2).mean(axis=(1, 3)) - b8).max() < 0.005
    # The gain and an open frame carry them: fitting log(response) with a smooth quadratic
    # surface (heel, radial fall-off) plus beta * log(blotches) gives beta = 1.
    good = ~coarse.truth.defective
    assert blotch_exponent(coarse.truth.gain, b8, good) == pytest.approx(1.0, abs=0.1)
    signal = np.mean([coarse.frame(20.0).astype(np.float64) - coarse.truth.offset for _ in range(4)], axis=0)
    assert blotch_exponent(signal, b8, good) == pytest.approx(1.0, abs=0.1)


def blotch_exponent(response: np.ndarray, blotches: np.ndarray, good: np.ndarray) -> float:
    """beta of the least-squares fit log(response) = quadratic(u, v) + beta * log(blotches)."""
    n = response.shape[0]
    v, u = np.mgrid[0:n, 0:n] / (n / 2) - 1.0
    columns = [np.ones_like(u), u, v, u * u, v * v, u * v, np.log(blotches)]
    design = np.stack([c[good] for c in columns], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.log(np.maximum(response[good], 1e-6)), rcond=None)
    return float(coef[-1])


def test_kerma_follows_distance_and_filtration() -> None:
    base = kerma_at_detector_ugy(80, 2)
    assert kerma_at_detector_ugy(80, 2, distance_cm=90) == pytest.approx(4 * base)  # inverse square
    assert kerma_at_detector_ugy(80, 2, filtration_mm_al=3.5) == pytest.approx(
        base * math.exp(-FILTRATION_MU_PER_MM_AL))
    with pytest.raises(ValueError):
        kerma_at_detector_ugy(80, 2, distance_cm=0)


def test_synthesis_is_cached_per_scene_and_field() -> None:
    model = DetectorModel("8x8", seed=4)
    first = model.expected_signal("qc")
    assert model.expected_signal("qc") is first and not first.flags.writeable
    assert model.transmission("qc") is model.transmission("qc")
