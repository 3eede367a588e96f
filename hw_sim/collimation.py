"""The collimated field: a rectangle of primary beam on the panel, only scatter outside it.

A field is given in millimetres on the panel (origin at the top-left pixel's corner, x along
columns, y along rows) or as fractions of the panel's side. A pixel is in the field when its
centre is. Outside, the panel sees SCATTER_FRACTION of the incident air kerma, uniform and
without the object's structure (scatter from the irradiated volume, not an image of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hw_sim.phantoms import box_pixels

SCATTER_FRACTION = 0.04  # of the incident air kerma, outside the collimated field


@dataclass(frozen=True)
class Field:
    """The collimated rectangle: left, top, right, bottom in mm on the panel."""

    left_mm: float
    top_mm: float
    right_mm: float
    bottom_mm: float

    def __post_init__(self) -> None:
        if not (0 <= self.left_mm < self.right_mm and 0 <= self.top_mm < self.bottom_mm):
            raise ValueError(f"collimated field {self.as_list()} mm is not a rectangle on the panel")

    @classmethod
    def from_fractions(cls, left: float, top: float, right: float, bottom: float, panel_mm: float) -> Field:
        if not all(0.0 <= v <= 1.0 for v in (left, top, right, bottom)):
            raise ValueError("collimation fractions must lie in [0, 1]")
        return cls(left * panel_mm, top * panel_mm, right * panel_mm, bottom * panel_mm)

    def as_list(self) -> list[float]:
        return [self.left_mm, self.top_mm, self.right_mm, self.bottom_mm]

    def pixels(self, rows: int, pitch_mm: float) -> tuple[int, int, int, int]:
        """The field in pixels of a mode: first row, end row, first column, end column (exclusive)."""
        rs, cs = box_pixels((self.left_mm, self.top_mm, self.right_mm, self.bottom_mm), pitch_mm, rows)
        return rs.start, rs.stop, cs.start, cs.stop


@lru_cache(maxsize=16)
def inside_mask(field: Field, rows: int, pitch_mm: float) -> np.ndarray:
    """True for the pixels in the field (cached, read-only)."""
    r0, r1, c0, c1 = field.pixels(rows, pitch_mm)
    mask = np.zeros((rows, rows), bool)
    mask[r0:r1, c0:c1] = True
    mask.setflags(write=False)
    return mask
