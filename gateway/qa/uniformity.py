"""AAPM TG-150 non-uniformity of a flat image, from non-overlapping 100 x 100-pixel ROIs.

The ROIs tile the image, centred (the margin left over is split between both edges). For each
ROI: mean pixel value (signal), SD (noise) and their ratio (SNR). For each of the three maps:
global non-uniformity = (max - min) / mean over all ROIs; local non-uniformity = the largest
relative difference between an ROI and the mean of its (up to 8) neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROI = 100  # pixels, side of one ROI (TG-150)


@dataclass(frozen=True)
class Uniformity:
    """Non-uniformity figures of one flat image (fractions, 0.01 = 1 %)."""

    roi_grid: tuple[int, int]
    mean_signal: float
    mean_noise: float
    mean_snr: float
    global_signal: float
    local_signal: float
    global_noise: float
    local_noise: float
    global_snr: float
    local_snr: float


def roi_stats(image: np.ndarray, roi: int = ROI) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD (float64) of each whole roi x roi square, the grid centred on the image."""
    rows, cols = image.shape
    ny, nx = rows // roi, cols // roi
    if ny < 1 or nx < 1:
        raise ValueError(f"a {rows}x{cols} image holds no {roi}x{roi} ROI")
    y0, x0 = (rows - ny * roi) // 2, (cols - nx * roi) // 2
    tiles = image[y0:y0 + ny * roi, x0:x0 + nx * roi].astype(np.float64).reshape(ny, roi, nx, roi)
    return tiles.mean(axis=(1, 3)), tiles.std(axis=(1, 3), ddof=1)


def global_nonuniformity(values: np.ndarray) -> float:
    return float((values.max() - values.min()) / values.mean())


def local_nonuniformity(values: np.ndarray) -> float:
    """Largest |ROI - mean of its 8-neighbours| / that mean (edge ROIs: the neighbours they have)."""
    ny, nx = values.shape
    if ny * nx < 2:
        return 0.0
    padded = np.pad(values, 1)
    present = np.pad(np.ones_like(values), 1)
    total = np.zeros_like(values)
    count = np.zeros_like(values)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            total += padded[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]
            count += present[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]
    around = total / count
    return float(np.max(np.abs(values - around) / around))


def uniformity(image: np.ndarray, roi: int = ROI) -> Uniformity:
    """TG-150 signal, noise and SNR non-uniformity of one (corrected) flat image."""
    means, sds = roi_stats(image, roi)
    snr = means / np.maximum(sds, 1e-12)
    return Uniformity(
        roi_grid=(int(means.shape[0]), int(means.shape[1])),
        mean_signal=float(means.mean()), mean_noise=float(sds.mean()), mean_snr=float(snr.mean()),
        global_signal=global_nonuniformity(means), local_signal=local_nonuniformity(means),
        global_noise=global_nonuniformity(sds), local_noise=local_nonuniformity(sds),
        global_snr=global_nonuniformity(snr), local_snr=local_nonuniformity(snr),
    )
