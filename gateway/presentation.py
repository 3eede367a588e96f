"""Presentation processing: the For Presentation image as a radiologist expects to see it.

The corrected frame is linear in dose; shown through one window it looks flat (the lungs and
the mediastinum of a chest differ by a factor of ten in dose). For Presentation pixels may be
processed (PS3.3 C.8.11.1.1.1); the For Processing image and the exposure index stay on the
linear frame. The steps, each deterministic and configured per protocol:

1. log: dose to log dose, so equal contrast means equal attenuation difference;
2. latitude: the central anatomy's 0.5-99.5 % log range mapped onto the 12-bit output;
3. equalisation, multi-scale unsharp masking: the coarse scale (about 20 mm) is compressed,
   so dense and thin parts share the window, and the middle scale (about 4 mm) is raised;
   CLAHE (OpenCV) instead or as well, by configuration;
4. edges: unsharp masking at about 1 mm whose detail below the noise level is cored away
   (noise is not sharpened), the noise level measured on the image itself.

Blurs run on an image pyramid, so the whole costs a few full-frame passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gateway.errors import DxgateError
from gateway.types import Presentation

OUTPUT_BITS = 12
_TOP = float((1 << OUTPUT_BITS) - 1)


@dataclass(frozen=True)
class PresentationParams:
    """Per protocol; the defaults suit adult chest and skeletal views."""

    latitude: tuple[float, float] = (0.5, 99.5)  # percentiles of the central log signal -> output range
    equalize: float = 0.6  # share of the coarse-scale signal removed (0: none)
    equalize_mm: float = 20.0
    contrast: float = 0.5  # middle-scale gain added (0: none)
    contrast_mm: float = 4.0
    edge_amount: float = 0.8  # fine-scale gain (0: none)
    edge_sigma_mm: float = 1.0
    noise_coring: float = 1.0  # fine detail below this many noise SDs is not sharpened
    clahe_clip: float = 0.0  # > 0: CLAHE as well (costlier), blended by clahe_blend
    clahe_tiles: int = 8
    clahe_blend: float = 0.5

    def describe(self) -> str:
        steps = [f"log; latitude {self.latitude[0]:g}-{self.latitude[1]:g} %"]
        if self.equalize > 0:
            steps.append(f"equalisation {self.equalize:g} at {self.equalize_mm:g} mm")
        if self.contrast > 0:
            steps.append(f"contrast {self.contrast:g} at {self.contrast_mm:g} mm")
        if self.clahe_clip > 0:
            steps.append(f"CLAHE clip {self.clahe_clip:g} tiles {self.clahe_tiles} blend {self.clahe_blend:g}")
        if self.edge_amount > 0:
            steps.append(f"edges {self.edge_amount:g} at {self.edge_sigma_mm:g} mm, coring {self.noise_coring:g} SD")
        return "; ".join(steps)


def present(pixels: np.ndarray, *, pixel_spacing_mm: tuple[float, float],
            params: PresentationParams = PresentationParams()) -> Presentation:
    """The processed 12-bit image of a corrected (linear, uint16) frame."""
    if pixels.ndim != 2 or pixels.dtype != np.uint16 or min(pixels.shape) < 16:
        raise DxgateError(f"presentation needs a 2-D uint16 frame of at least 16x16, not {pixels.dtype}{pixels.shape}")
    rows, cols = pixels.shape
    img = np.empty(pixels.shape, np.float32)
    np.log1p(pixels, out=img, dtype=np.float32)
    centre = img[rows // 8: rows - rows // 8: 4, cols // 8: cols - cols // 8: 4]
    lo, hi = (float(v) for v in np.percentile(centre, params.latitude))
    if not hi > lo:  # a flat frame (no object): nothing to stretch
        hi = lo + 1.0
    img -= lo
    img *= _TOP / (hi - lo)  # not clipped yet: what lies beyond the latitude keeps its order through the steps
    px = float(min(pixel_spacing_mm))
    if params.equalize > 0 or params.contrast > 0:
        coarse = _blur(img, params.equalize_mm / px) if params.equalize > 0 else None  # of the image before contrast
        if params.contrast > 0:
            img += params.contrast * (img - _blur(img, params.contrast_mm / px))
        if coarse is not None:
            coarse -= float(coarse[rows // 4: rows - rows // 4, cols // 4: cols - cols // 4].mean())
            coarse *= params.equalize
            img -= coarse
    if params.clahe_clip > 0 and params.clahe_blend > 0:
        np.clip(img, 0.0, _TOP, out=img)
        tiles = max(1, int(params.clahe_tiles))
        clahe = cv2.createCLAHE(clipLimit=params.clahe_clip, tileGridSize=(tiles, tiles))
        local = clahe.apply(img.astype(np.uint16)).astype(np.float32)  # 16-bit CLAHE keeps the 12-bit range
        img *= 1.0 - params.clahe_blend
        img += params.clahe_blend * local
    if params.edge_amount > 0:
        detail = img - _blur(img, max(0.5, params.edge_sigma_mm / px))
        sample = detail[rows // 8: rows - rows // 8: 4, cols // 8: cols - cols // 8: 4]
        t = params.noise_coring * 1.4826 * float(np.median(np.abs(sample)))  # robust SD: mostly noise
        if t > 0:  # soft threshold: detail within +-t dropped, beyond it shrunk by t (no edge inverted)
            np.subtract(detail, np.clip(detail, -t, t), out=detail)
        detail *= params.edge_amount
        img += detail
    np.clip(img, 0.0, _TOP, out=img)
    out = np.rint(img).astype(np.uint16)
    return Presentation(pixels=out, bits_stored=OUTPUT_BITS, description=params.describe())


# Variance (px^2, full size) that going down and up a pyramid of L levels adds by itself.
_PYRAMID_VARIANCE = (0.0, 5.5, 13.5, 45.5, 173.5)


def _blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """A Gaussian blur of `sigma_px`, done on a pyramid when it is wide (10x cheaper at 7 px):
    down L levels, the rest of the variance at that size, back up."""
    levels = 0
    while (levels + 1 < len(_PYRAMID_VARIANCE) and _PYRAMID_VARIANCE[levels + 1] < 0.5 * sigma_px ** 2
           and min(img.shape) >> (levels + 1) >= 32):
        levels += 1
    shapes = [img.shape]
    small = img
    for _ in range(levels):
        small = cv2.pyrDown(small)
        shapes.append(small.shape)
    rest = ((sigma_px ** 2 - _PYRAMID_VARIANCE[levels]) / 4 ** levels) ** 0.5
    out: np.ndarray = cv2.GaussianBlur(small, (0, 0), rest)
    for shape in reversed(shapes[:-1]):
        out = cv2.pyrUp(out, dstsize=(shape[1], shape[0]))
    return out
