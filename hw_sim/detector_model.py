"""Physics of the simulated flat panel, with its ground truth kept for measurement.

raw = offset(T) + gain * sensitivity * kerma * transmission + lag + noise, clipped to 16 bits
(docs/simulator.md has the formulas). Transmission is the scene's (hw_sim/phantoms.py) inside
the collimated field and scatter only outside it (hw_sim/collimation.py);
with defects of every ASTM E2597 class planted at known places (hw_sim/defects.py): dead, hot,
over/under-responding, noisy and lag pixels, column and row line segments, clusters. A lag pixel
keeps LAG_FRACTION of its signal into the next frame. The same seed always gives the same
panel and, frame for frame, the same noise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from hw_sim.collimation import SCATTER_FRACTION, Field, inside_mask
from hw_sim.defects import plant
from hw_sim.phantoms import SCENES, transmission_map

# Readout modes of the simulated panel (43 x 43 cm, 0.139 mm native pitch).
MODES: dict[str, tuple[int, int, float]] = {
    # name: (mode_id, rows = columns, pixel spacing mm)
    "1x1": (0, 3072, 0.139),
    "2x2": (1, 1536, 0.278),
    "4x4": (2, 768, 0.556),
    "8x8": (3, 384, 1.112),
}

BITS_STORED = 16
MAX_VALUE = (1 << BITS_STORED) - 1
LAG_FRACTION = 0.15  # of a lag pixel's signal left in the next frame
LINE_UNDER_GAIN = 0.3  # relative response of the line pixels that are not dead
BLOTCHES = 6  # scintillator blotches: soft dips in the gain
BLOTCH_DEPTH = (0.02, 0.06)  # relative gain lost at a blotch's centre
BLOTCH_SIGMA_MM = (4.0, 15.0)
TEMPERATURE_DRIFT = 2.0  # offset counts per degree C away from the reference temperature
QUANTUM_GAIN = 4.0  # variance of the signal per count of mean signal (Poisson, scaled)
NONLINEARITY_SPREAD = 0.5  # relative SD of the per-pixel compression around its mean (off unless asked for)


@dataclass(frozen=True)
class Truth:
    """What the simulator knows and the gateway must find out by calibrating."""

    offset: np.ndarray  # float32 counts at the reference temperature
    gain: np.ndarray  # float32 relative pixel gain, mean 1
    dead: np.ndarray  # bool: no response to X-rays (reads offset only)
    hot: np.ndarray  # bool: saturated regardless of dose
    over: np.ndarray  # bool: responds > 1.3x its neighbours
    under: np.ndarray  # bool: responds < 0.6x its neighbours (but not dead)
    noisy: np.ndarray  # bool: dark noise far above the rest
    lag: np.ndarray  # bool: keeps LAG_FRACTION of its signal into the next frame
    line: np.ndarray  # bool: in a row or column segment that does not respond (or barely)
    cluster: np.ndarray  # bool: in a group of adjacent dead pixels
    clusters: tuple[tuple[tuple[int, int], ...], ...]  # each cluster's (row, column) pixels
    blotches: np.ndarray  # float32 relative gain of the scintillator's blotches (1: none), in `gain`
    # float32 per-pixel compression of the response (None: linear): a pixel whose linear signal is
    # s reads s * (1 - k * s / MAX_VALUE) (DetectorModel.response)
    nonlinearity: np.ndarray | None = None

    @property
    def defective(self) -> np.ndarray:
        return (self.dead | self.hot | self.over | self.under | self.noisy | self.lag | self.line
                | self.cluster)


class DetectorModel:
    """One simulated panel in one readout mode."""

    def __init__(self, mode: str = "2x2", seed: int = 1, *, counts_per_ugy: float = 400.0,
                 offset_level: float = 1000.0, read_noise: float = 6.0,
                 defect_fraction: float = 0.0005, temperature_c: float = 30.0, nonlinearity: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
        self.mode = mode
        self.mode_id, n, self.pixel_spacing_mm = MODES[mode]
        self.rows = self.columns = n
        self.seed = seed
        self.counts_per_ugy = counts_per_ugy
        self.read_noise = read_noise
        self.temperature_c = temperature_c
        self._reference_temperature_c = temperature_c
        self._frame_rng = np.random.default_rng([seed, self.mode_id, 1])
        self.truth = self._make_truth(np.random.default_rng([seed, self.mode_id, 0]),
                                      offset_level, defect_fraction)
        if nonlinearity > 0:  # its own random stream: the rest of the panel stays the same
            k = np.random.default_rng([seed, self.mode_id, 2]).normal(1.0, NONLINEARITY_SPREAD,
                                                                     (self.rows, self.columns))
            k = (nonlinearity * np.clip(k, 0.0, None)).astype(np.float32)
            k.setflags(write=False)
            self.truth = dataclasses.replace(self.truth, nonlinearity=k)
        self._mean_per_ugy: dict[tuple[str, Field | None], np.ndarray] = {}

    @property
    def panel_mm(self) -> float:
        """The side of the (square) active area in mm."""
        return self.rows * self.pixel_spacing_mm

    def _make_truth(self, rng: np.random.Generator, offset_level: float, fraction: float) -> Truth:
        shape = (self.rows, self.columns)
        yy, xx = np.mgrid[0:self.rows, 0:self.columns].astype(np.float32)
        # Offset: a per-pixel fixed pattern plus column banding from the readout amplifiers.
        offset = offset_level + rng.normal(0, 40, shape).astype(np.float32)
        offset += (rng.normal(0, 15, self.columns).astype(np.float32))[None, :]
        # Gain: smooth non-uniformity (heel effect, scintillator thickness) plus pixel noise.
        cy, cx = self.rows / 2, self.columns / 2
        radial = 1.0 - 0.15 * (((yy - cy) / cy) ** 2 + ((xx - cx) / cx) ** 2) / 2
        heel = 1.0 + 0.08 * (xx - cx) / cx
        gain = radial * heel * (1 + rng.normal(0, 0.03, shape).astype(np.float32))
        blotches = self._blotches(np.random.default_rng([self.seed, 1000]))
        gain *= blotches
        gain = (gain / gain.mean()).astype(np.float32)
        layout = plant(rng, shape, fraction)
        s = layout.single
        gain[s["over"]] *= 1.8
        gain[s["under"]] *= 0.35
        gain[layout.line] *= LINE_UNDER_GAIN
        gain[layout.line_dead] = 0.0
        gain[layout.cluster] = 0.0
        gain[s["dead"]] = 0.0
        self._lag_index = np.flatnonzero(s["lag"])
        self._lag_carry = np.zeros(self._lag_index.size, np.float32)
        blotches.setflags(write=False)
        return Truth(offset=offset, gain=gain.astype(np.float32), dead=s["dead"], hot=s["hot"], over=s["over"],
                     under=s["under"], noisy=s["noisy"], lag=s["lag"], line=layout.line, cluster=layout.cluster,
                     clusters=layout.clusters, blotches=blotches)

    def _blotches(self, rng: np.random.Generator) -> np.ndarray:
        """Relative gain of the scintillator's blotches: Gaussian dips placed in mm, so that
        every mode sees the same blotches (their own random stream: the defects stay put)."""
        centres = (np.arange(self.rows, dtype=np.float32) + 0.5) * self.pixel_spacing_mm
        factor = np.ones((self.rows, self.columns), np.float32)
        side = self.panel_mm
        for _ in range(BLOTCHES):
            x, y = rng.uniform(0.1 * side, 0.9 * side, 2)
            depth, sigma = rng.uniform(*BLOTCH_DEPTH), rng.uniform(*BLOTCH_SIGMA_MM)
            gy = np.exp(-((centres - y) ** 2) / (2 * sigma * sigma))
            gx = np.exp(-((centres - x) ** 2) / (2 * sigma * sigma))
            factor -= np.float32(depth) * np.outer(gy, gx).astype(np.float32)
        return factor

    def transmission(self, scene: str) -> np.ndarray | None:
        """Fraction of the beam reaching each pixel: None for an open field (cached, read-only)."""
        if scene not in SCENES:
            raise ValueError(f"unknown scene {scene!r}; scenes: {', '.join(SCENES)}")
        return transmission_map(scene, self.rows, self.pixel_spacing_mm)

    def expected_signal(self, scene: str = "open", field: Field | None = None) -> np.ndarray:
        """Mean signal (counts above offset) per uGy of incident air kerma at each pixel:
        counts_per_ugy * gain * (transmission in the field, SCATTER_FRACTION outside it).
        Cached per (scene, field) and read-only: frame synthesis is one multiply and the noise."""
        key = (scene, field)
        cached = self._mean_per_ugy.get(key)
        if cached is not None:
            return cached
        base = np.float32(self.counts_per_ugy) * self.truth.gain
        trans = self.transmission(scene)
        mean = base * trans if trans is not None else base
        if field is not None:
            inside = inside_mask(field, self.rows, self.pixel_spacing_mm)
            mean = np.where(inside, mean, base * np.float32(SCATTER_FRACTION))
        mean = np.ascontiguousarray(mean, np.float32)
        mean.setflags(write=False)
        if len(self._mean_per_ugy) >= 4:
            self._mean_per_ugy.pop(next(iter(self._mean_per_ugy)))
        self._mean_per_ugy[key] = mean
        return mean

    def response(self, linear: np.ndarray) -> np.ndarray:
        """Each pixel's mean signal for the mean signal `linear` a linear panel would give (ground
        truth of the nonlinearity; the same array when the panel is linear)."""
        k = self.truth.nonlinearity
        if k is None:
            return linear
        return (linear * (1 - k * linear / np.float32(MAX_VALUE))).astype(np.float32)

    def frame(self, kerma_ugy: float = 0.0, scene: str = "open", field: Field | None = None) -> np.ndarray:
        """One raw frame: dark when kerma_ugy is 0, else exposed through the scene (and the
        collimated ``field``; None: the whole panel)."""
        t = self.truth
        drift = TEMPERATURE_DRIFT * (self.temperature_c - self._reference_temperature_c)
        signal: np.ndarray = np.zeros((self.rows, self.columns), np.float32)
        if kerma_ugy > 0:
            mean = self.response(np.float32(kerma_ugy) * self.expected_signal(scene, field))
            # Quantum noise: variance proportional to the signal (QUANTUM_GAIN counts per quantum).
            signal = mean + self._frame_rng.normal(0, 1, mean.shape).astype(np.float32) * np.sqrt(
                np.maximum(mean, 0) * QUANTUM_GAIN)
        noise_sd = np.where(t.noisy, self.read_noise * 12, self.read_noise)
        raw = t.offset + drift + signal + self._frame_rng.normal(0, 1, signal.shape).astype(np.float32) * noise_sd
        carry = signal.reshape(-1)[self._lag_index]
        raw.reshape(-1)[self._lag_index] += self._lag_carry
        self._lag_carry = (LAG_FRACTION * np.maximum(carry, 0)).astype(np.float32)
        raw = np.where(t.hot, MAX_VALUE, raw)
        return np.clip(np.rint(raw), 0, MAX_VALUE).astype(np.uint16)
