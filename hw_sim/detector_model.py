"""Physics of the simulated flat panel, with its ground truth kept for measurement.

raw = offset(T) + gain * sensitivity * kerma * transmission + lag + noise, clipped to 16 bits,
with defects of every ASTM E2597 class planted at known places (hw_sim/defects.py): dead, hot,
over/under-responding, noisy and lag pixels, column and row line segments, clusters. A lag pixel
keeps LAG_FRACTION of its signal into the next frame. The same seed always gives the same
panel and, frame for frame, the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw_sim.defects import plant

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

    @property
    def defective(self) -> np.ndarray:
        return (self.dead | self.hot | self.over | self.under | self.noisy | self.lag | self.line
                | self.cluster)


class DetectorModel:
    """One simulated panel in one readout mode."""

    def __init__(self, mode: str = "2x2", seed: int = 1, *, counts_per_ugy: float = 400.0,
                 offset_level: float = 1000.0, read_noise: float = 6.0,
                 defect_fraction: float = 0.0005, temperature_c: float = 30.0) -> None:
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
        return Truth(offset=offset, gain=gain.astype(np.float32), dead=s["dead"], hot=s["hot"], over=s["over"],
                     under=s["under"], noisy=s["noisy"], lag=s["lag"], line=layout.line, cluster=layout.cluster,
                     clusters=layout.clusters)

    def transmission(self, scene: str) -> np.ndarray | None:
        """Fraction of the beam reaching each pixel: None for an open field."""
        if scene == "open":
            return None
        if scene == "chest":
            yy, xx = np.mgrid[0:self.rows, 0:self.columns].astype(np.float32)
            cy, cx = self.rows / 2, self.columns / 2
            body = np.clip(1 - (((xx - cx) / (0.42 * self.columns)) ** 2), 0, 1)
            lungs = (np.exp(-((np.abs(xx - cx) - 0.18 * self.columns) / (0.1 * self.columns)) ** 2)
                     * np.exp(-((yy - cy * 0.9) / (0.3 * self.rows)) ** 2))
            spine = np.exp(-((xx - cx) / (0.04 * self.columns)) ** 2)
            t = 1.0 - 0.85 * body + 0.55 * lungs - 0.12 * spine
            return np.clip(t, 0.03, 1.0).astype(np.float32)
        raise ValueError(f"unknown scene {scene!r}; scenes: open, chest")

    def frame(self, kerma_ugy: float = 0.0, scene: str = "open") -> np.ndarray:
        """One raw frame: dark when kerma_ugy is 0, else exposed through the scene."""
        t = self.truth
        drift = 2.0 * (self.temperature_c - self._reference_temperature_c)
        signal: np.ndarray = np.zeros((self.rows, self.columns), np.float32)
        if kerma_ugy > 0:
            trans = self.transmission(scene)
            mean = self.counts_per_ugy * kerma_ugy * t.gain
            if trans is not None:
                mean = mean * trans
            # Quantum noise: variance proportional to the signal (gain of ~1 count per quantum x4).
            signal = mean + self._frame_rng.normal(0, 1, mean.shape).astype(np.float32) * np.sqrt(
                np.maximum(mean, 0) * 4.0)
        noise_sd = np.where(t.noisy, self.read_noise * 12, self.read_noise)
        raw = t.offset + drift + signal + self._frame_rng.normal(0, 1, signal.shape).astype(np.float32) * noise_sd
        carry = signal.reshape(-1)[self._lag_index]
        raw.reshape(-1)[self._lag_index] += self._lag_carry
        self._lag_carry = (LAG_FRACTION * np.maximum(carry, 0)).astype(np.float32)
        raw = np.where(t.hot, MAX_VALUE, raw)
        return np.clip(np.rint(raw), 0, MAX_VALUE).astype(np.uint16)
