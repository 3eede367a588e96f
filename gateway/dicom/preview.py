"""A windowed 8-bit PNG of a corrected frame, for the console's preview.

The same window the DX object carries (central 1-99 % percentiles) and the same polarity as
its MONOCHROME1 display (more X-rays = darker), downsampled by area averaging so a 3072 x 3072
frame previews in a few milliseconds.
"""

from __future__ import annotations

import cv2
import numpy as np

from gateway.dicom.dx import WINDOW_PERCENTILES
from gateway.errors import DxgateError

PREVIEW_SIDE = 1024


def reduce_for_preview(pixels: np.ndarray, max_side: int = PREVIEW_SIDE) -> np.ndarray:
    """The frame area-averaged down to at most `max_side` (float32): what a console keeps of an
    image it shows, instead of the full frame (a 3072 x 3072 frame is 18-37 MB)."""
    if pixels.ndim != 2 or pixels.size == 0:
        raise DxgateError(f"cannot preview an array of shape {pixels.shape}")
    rows, cols = pixels.shape
    scale = max(rows, cols) / max_side
    img: np.ndarray = pixels.astype(np.float32, copy=False)
    if scale > 1:
        img = cv2.resize(img, (max(1, round(cols / scale)), max(1, round(rows / scale))), interpolation=cv2.INTER_AREA)
    return img


def preview_png(pixels: np.ndarray, max_side: int = PREVIEW_SIDE) -> bytes:
    img = reduce_for_preview(pixels, max_side)
    r, c = img.shape
    centre = img[r // 4: r - r // 4 or r, c // 4: c - c // 4 or c]
    lo, hi = (float(v) for v in np.percentile(centre, WINDOW_PERCENTILES))
    width = max(hi - lo, 1.0)
    out = np.clip((img - lo) * (255.0 / width), 0, 255).astype(np.uint8)
    out = 255 - out  # MONOCHROME1: more X-rays shown darker
    ok, buf = cv2.imencode(".png", out)
    if not ok:
        raise DxgateError("PNG encoding of the preview failed")
    return bytes(buf.tobytes())
