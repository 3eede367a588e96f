"""Per-pixel statistics of a series of frames, accumulated one frame at a time (float32 memory).

The mean is robust: with five frames or more, each pixel's lowest and highest value are left
out (a spike, a glitch or a cosmic in one frame moves neither mean nor SD). Deviations are
taken from the first frame, so that the float32 sums stay exact for uint16 counts.
"""

from __future__ import annotations

import numpy as np

TRIM_FROM = 5  # frames: from this many on, each pixel's extremes are left out


class FrameStats:
    """Running sums of one shape; add() each frame, then result() once."""

    def __init__(self, shape: tuple[int, int], *, with_sd: bool = True) -> None:
        self.shape = shape
        self.count = 0
        self.frame_levels: list[float] = []
        self._ref = np.zeros(shape, np.uint16)
        self._sum = np.zeros(shape, np.float32)  # of (x - ref): integers, exact in float32
        self._squares = np.zeros(shape, np.float32) if with_sd else None
        self._low = np.zeros(shape, np.uint16)
        self._high = np.zeros(shape, np.uint16)
        self._scratch = np.empty(shape, np.float32)

    def add(self, pixels: np.ndarray) -> float:
        """Accumulate one frame; returns its level: the median of a 4x4-pixel grid (spikes do not
        move it, light does)."""
        if pixels.shape != self.shape:
            raise ValueError(f"frame is {pixels.shape}, the series {self.shape}")
        if self.count == 0:
            np.copyto(self._ref, pixels)
            np.copyto(self._low, pixels)
            np.copyto(self._high, pixels)
        else:
            np.minimum(self._low, pixels, out=self._low)
            np.maximum(self._high, pixels, out=self._high)
        np.subtract(pixels, self._ref, out=self._scratch, dtype=np.float32)
        self._sum += self._scratch
        if self._squares is not None:
            self._scratch *= self._scratch
            self._squares += self._scratch
        self.count += 1
        level = float(np.median(pixels[::4, ::4]))
        self.frame_levels.append(level)
        return level

    @property
    def trimmed(self) -> bool:
        return self.count >= TRIM_FROM

    def result(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-pixel mean and temporal SD (None without squares), float32, extremes left out from
        TRIM_FROM frames on. Computed in place: the series is spent afterwards."""
        if self.count == 0:
            raise ValueError("no frames accumulated")
        total, squares, n = self._sum, self._squares, self.count
        if self.trimmed:
            for extreme in (self._low, self._high):
                np.subtract(extreme, self._ref, out=self._scratch, dtype=np.float32)
                total -= self._scratch
                if squares is not None:
                    self._scratch *= self._scratch
                    squares -= self._scratch
            n -= 2
        del self._low, self._high, self._scratch
        sd = None
        if squares is not None:  # var = (squares - total^2 / n) / (n - 1), in place
            self._squares = None
            squares -= _sq_over(total, n)
            squares /= max(n - 1, 1)
            np.maximum(squares, 0, out=squares)
            sd = np.sqrt(squares, out=squares)
        total /= n
        total += self._ref
        self.count = 0
        return total, sd


def _sq_over(total: np.ndarray, n: int) -> np.ndarray:
    out = np.square(total)
    out /= n
    return out
