"""Response linearity: corrected signal against the delivered mAs at a fixed kV and distance.

The signal of each flat is the median of its central 50 % x 50 %. The response is fitted by a
line through the origin (an offset-corrected detector reads 0 without dose); the figures are
R^2 and the largest relative deviation of a point from that line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Linearity:
    mas: tuple[float, ...]
    signal: tuple[float, ...]
    counts_per_mas: float
    r_squared: float
    max_deviation: float  # largest |signal / fitted - 1|


def central_signal(image: np.ndarray) -> float:
    rows, cols = image.shape
    return float(np.median(image[rows // 4:rows - rows // 4, cols // 4:cols - cols // 4]))


def linearity(points: Sequence[tuple[float, np.ndarray]]) -> Linearity:
    """From (mAs, corrected flat) pairs at two or more doses."""
    if len({m for m, _ in points}) < 2:
        raise ValueError("linearity needs flats at two doses or more")
    x = np.array([m for m, _ in points], np.float64)
    y = np.array([central_signal(img) for _, img in points], np.float64)
    slope = float(x @ y / (x @ x))
    fitted = slope * x
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - fitted) ** 2).sum()) / total if total > 0 else 1.0
    return Linearity(mas=tuple(x.tolist()), signal=tuple(y.tolist()), counts_per_mas=slope, r_squared=r2,
                     max_deviation=float(np.max(np.abs(y / fitted - 1))))
