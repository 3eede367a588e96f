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
from gateway.histogram import percentiles_u16
from gateway.jit import compiled
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
    """The processed 12-bit image of a corrected (linear, uint16) frame.

    Two full-size float32 temporaries and the output are all it allocates: the coarse and middle
    scales are blurred from one shared pyramid and, pyrUp being linear, combined at the small
    size and brought up once; the last step (edges, clip, round) is one fused pass."""
    if pixels.ndim != 2 or pixels.dtype != np.uint16 or min(pixels.shape) < 16:
        raise DxgateError(f"presentation needs a 2-D uint16 frame of at least 16x16, not {pixels.dtype}{pixels.shape}")
    rows, cols = pixels.shape
    centre = pixels[rows // 8: rows - rows // 8: 4, cols // 8: cols - cols // 8: 4]
    lo, hi = percentiles_u16(centre, params.latitude, of=_LOG1P)  # of the log values, from a histogram
    if not hi > lo:  # a flat frame (no object): nothing to stretch
        hi = lo + 1.0
    img = np.empty(pixels.shape, np.float32)
    # not clipped yet: what lies beyond the latitude keeps its order through the steps
    _look_up(pixels, (_LOG1P - lo) * (_TOP / (hi - lo)), img)
    px = float(min(pixel_spacing_mm))
    scales = []  # (sigma px, weight): img += sum(weight * blur(img, sigma)) after img *= 1 + contrast
    if params.contrast > 0:
        scales.append((params.contrast_mm / px, -params.contrast))
    if params.equalize > 0:
        scales.append((params.equalize_mm / px, -params.equalize))
    spare = None  # a full-size float32 buffer free for reuse (each fresh one costs page faults)
    if scales:
        spare = _blend_blurs(img, scales, mean_free=params.equalize > 0)
        if params.contrast > 0:
            img *= 1.0 + params.contrast
        img += spare
    if params.clahe_clip > 0 and params.clahe_blend > 0:
        np.clip(img, 0.0, _TOP, out=img)
        tiles = max(1, int(params.clahe_tiles))
        clahe = cv2.createCLAHE(clipLimit=params.clahe_clip, tileGridSize=(tiles, tiles))
        local = clahe.apply(img.astype(np.uint16)).astype(np.float32)  # 16-bit CLAHE keeps the 12-bit range
        img *= 1.0 - params.clahe_blend
        img += params.clahe_blend * local
    out = np.empty(pixels.shape, np.uint16)
    if params.edge_amount > 0:
        fine = _blend_blurs(img, [(max(0.5, params.edge_sigma_mm / px), 1.0)], mean_free=False, out=spare)
        sample_rows, sample_cols = slice(rows // 8, rows - rows // 8, 4), slice(cols // 8, cols - cols // 8, 4)
        detail = img[sample_rows, sample_cols] - fine[sample_rows, sample_cols]
        t = params.noise_coring * 1.4826 * float(np.median(np.abs(detail)))  # robust SD: mostly noise
        _finish(img, fine, float(params.edge_amount), max(t, 0.0), _TOP, out)
    else:
        _finish(img, img, 0.0, 0.0, _TOP, out)
    return Presentation(pixels=out, bits_stored=OUTPUT_BITS, description=params.describe())


def warm_up() -> None:
    """Compile (or load from numba's cache) the fused kernel now, not on the first clinical frame."""
    present(np.full((64, 64), 1000, np.uint16), pixel_spacing_mm=(0.15, 0.15))


_LOG1P = np.log1p(np.arange(1 << 16, dtype=np.uint16), dtype=np.float32)  # log1p of every pixel value


@compiled
def _look_up(pixels: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    """out = table[pixels]: a log and a scaling of each pixel, as one read of a 256 KB table."""
    rows, cols = pixels.shape
    for r in range(rows):
        for c in range(cols):
            out[r, c] = table[pixels[r, c]]


@compiled
def _finish(img: np.ndarray, fine: np.ndarray, amount: float, t: float, top: float, out: np.ndarray) -> None:
    """out = round(clip(img + amount * soft(img - fine, t), 0, top)): detail within +-t is
    dropped as noise, beyond it shrunk by t (no edge inverted); one pass, no temporaries."""
    rows, cols = img.shape
    for r in range(rows):
        for c in range(cols):
            v = img[r, c]
            d = v - fine[r, c]
            if d > t:
                v += amount * (d - t)
            elif d < -t:
                v += amount * (d + t)
            if v < 0.0:
                v = 0.0
            elif v > top:
                v = top
            out[r, c] = np.uint16(v + 0.5)


# Variance (px^2, full size) that going down and up a pyramid of L levels adds by itself.
_PYRAMID_VARIANCE = (0.0, 5.5, 13.5, 45.5, 173.5)


def _levels(sigma_px: float, shape: tuple[int, ...]) -> int:
    """Pyramid levels for a Gaussian of `sigma_px` (10x cheaper at 7 px than a full-size blur)."""
    levels = 0
    while (levels + 1 < len(_PYRAMID_VARIANCE) and _PYRAMID_VARIANCE[levels + 1] < 0.5 * sigma_px ** 2
           and min(shape) >> (levels + 1) >= 32):
        levels += 1
    return levels


def _blend_blurs(img: np.ndarray, scales: list[tuple[float, float]], *, mean_free: bool,
                 out: np.ndarray | None = None) -> np.ndarray:
    """sum(weight * GaussianBlur(img, sigma)) at full size, from one pyramid: down to each
    scale's level, the rest of the variance there, the weighted parts summed on the way back up.
    With `mean_free`, the widest blur has its central mean taken off (equalisation removes
    the coarse variation, not the overall level). The full-size result goes to `out` when given
    (float32, img's shape) and the last step is a pyramid step."""
    need = [_levels(sigma, img.shape) for sigma, _ in scales]
    pyramid = [img]
    for _ in range(max(need)):
        pyramid.append(cv2.pyrDown(pyramid[-1]))
    widest = max(range(len(scales)), key=lambda i: scales[i][0])
    parts: dict[int, np.ndarray] = {}
    for i, ((sigma, weight), level) in enumerate(zip(scales, need, strict=True)):
        rest = ((sigma ** 2 - _PYRAMID_VARIANCE[level]) / 4 ** level) ** 0.5
        part: np.ndarray = cv2.GaussianBlur(pyramid[level], (0, 0), rest)
        if mean_free and i == widest:
            h, w = part.shape
            part -= float(part[h // 4: h - h // 4, w // 4: w - w // 4].mean())
        part *= weight
        parts[level] = part if level not in parts else parts[level] + part
    level = max(parts)
    acc = parts[level]
    while level > 0:
        level -= 1
        h, w = pyramid[level].shape
        acc = cv2.pyrUp(acc, dst=out if level == 0 and level not in parts else None, dstsize=(w, h))
        if level in parts:
            acc += parts[level]
    return acc
