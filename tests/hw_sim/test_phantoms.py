"""The phantoms' ground truth is what the real driver reads back through the `socket` pyusb
backend: step wedge, line pairs and low-contrast discs of the QC phantom, the hand's bone and
soft tissue. Offset and gain are taken out with the simulator's truth; the scene is not."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hw_sim import phantoms
from hw_sim.phantoms import hand_labels, transmission_map
from tests.hw_sim.imaging import MODE, bench

SIGMAS = 5.0  # a mean agrees "within noise" when it is within this many standard errors


def roi(t: np.ndarray, rows: list[int], columns: list[int], margin: int = 3) -> np.ndarray:
    return t[rows[0] + margin:rows[1] - margin, columns[0] + margin:columns[1] - margin]


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    return float(v.mean()), float(v.std() / math.sqrt(v.size))


def modulation(t: np.ndarray, group: dict[str, object], pitch_mm: float) -> float:
    """Amplitude of the group's fundamental over its mean (a DFT at lp_per_mm of the profile
    across the bars, each column averaged along the bars): independent of the sampling phase."""
    rows, cols = group["rows"], group["columns"]
    assert isinstance(rows, list) and isinstance(cols, list)
    profile = np.nanmean(t[rows[0] + 3:rows[1] - 3, cols[0]:cols[1]], axis=0)
    x = (np.arange(cols[0], cols[1]) + 0.5) * pitch_mm
    f = float(group["lp_per_mm"])  # type: ignore[arg-type]
    amplitude = abs(np.sum((profile - profile.mean()) * np.exp(-2j * np.pi * f * x))) * 2 / profile.size
    return float(amplitude / profile.mean())


@pytest.fixture(scope="module")
def qc(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, dict[str, object]]:
    """One QC phantom exposure read through the driver, as transmission, and the truth."""
    with bench(tmp_path_factory.mktemp("qc")) as b:
        b.ctl.call("place", scene="qc")
        truth = b.ctl.call("truth", mode=MODE)["truth"]
        return b.transmission(b.expose()), truth


def test_step_wedge_means_are_ordered_and_match_the_attenuation(qc: tuple[np.ndarray, dict[str, object]]) -> None:
    t, truth = qc
    steps = truth["steps"]
    assert isinstance(steps, list) and len(steps) == len(phantoms.WEDGE_STEPS_MM)
    means = []
    for step in steps:
        mean, se = mean_and_se(roi(t, step["rows"], step["columns"]))
        # The attenuation of its aluminium, independently of the simulator's own number.
        expected = phantoms.QC_PLATE_TRANSMISSION * math.exp(-phantoms.AL_MU_PER_MM * step["aluminium_mm"])
        assert step["transmission"] == pytest.approx(expected)
        assert abs(mean - expected) < SIGMAS * se + 1e-4, (step, mean, se)
        means.append(mean)
    assert all(a > b for a, b in zip(means, means[1:], strict=False))


def test_line_pair_modulation_falls_with_frequency(qc: tuple[np.ndarray, dict[str, object]]) -> None:
    t, truth = qc
    pitch, nyquist = float(truth["pixel_spacing_mm"]), float(truth["nyquist_lp_per_mm"])  # type: ignore[arg-type]
    groups = truth["line_pairs"]
    assert isinstance(groups, list)
    resolved = [g for g in groups if g["lp_per_mm"] < nyquist]
    assert len(resolved) >= 4
    expected_map = transmission_map("qc", t.shape[0], pitch)
    assert expected_map is not None
    measured = []
    for g in groups:
        m = modulation(t, g, pitch)
        assert m == pytest.approx(modulation(expected_map, g, pitch), abs=0.02), g
        measured.append(m)
    below = measured[:len(resolved)]
    assert below[0] > 0.5 and all(a > b + 0.02 for a, b in zip(below, below[1:], strict=False)), below
    # The pixel aperture alone: each fundamental falls as sinc(f * pitch) (square-wave bars).
    for g, m in zip(resolved, below, strict=True):
        ratio = np.sinc(g["lp_per_mm"] * pitch) / np.sinc(resolved[0]["lp_per_mm"] * pitch)
        assert m / below[0] == pytest.approx(ratio, abs=0.05), g


def test_low_contrast_discs_have_their_specified_contrast(qc: tuple[np.ndarray, dict[str, object]]) -> None:
    t, truth = qc
    discs = truth["discs"]
    assert isinstance(discs, list) and [d["contrast"] for d in discs] == list(phantoms.DISC_CONTRASTS)
    yy, xx = np.mgrid[0:t.shape[0], 0:t.shape[1]]
    for d in discs:
        (cy, cx), r = d["centre_px"], d["radius_px"]
        dist = np.hypot(yy - cy, xx - cx)
        inside, inside_se = mean_and_se(t[dist < 0.8 * r])
        around, around_se = mean_and_se(t[(dist > 1.3 * r) & (dist < 1.8 * r)])
        contrast = 1 - inside / around
        se = math.hypot(inside_se, around_se) / around
        assert abs(contrast - d["contrast"]) < SIGMAS * se, (d, contrast, se)


def test_hand_bone_and_soft_tissue_transmit_as_specified(tmp_path: Path) -> None:
    with bench(tmp_path) as b:
        b.ctl.call("place", scene="hand")
        truth = b.ctl.call("truth", mode=MODE)["truth"]
        t = b.transmission(b.expose())
    labels = hand_labels(t.shape[0], float(truth["pixel_spacing_mm"]))
    # Away from the outlines: a pixel whose neighbours two pixels away carry its own label.
    interior = np.ones(labels.shape, bool)
    for axis in (0, 1):
        for shift in (-2, 2):
            interior &= np.roll(labels, shift, axis=axis) == labels
    means = {}
    for label, key in ((0, "air_transmission"), (1, "soft_transmission"), (2, "bone_transmission")):
        region = interior & (labels == label)
        assert region.sum() > 2000, key
        mean, se = mean_and_se(t[region])
        assert abs(mean - truth[key]) < SIGMAS * se + 1e-4, (key, mean, se)
        means[key] = mean
    assert means["bone_transmission"] < means["soft_transmission"] < means["air_transmission"]
