"""What stands between tube and panel: each scene a deterministic transmission map, with ground truth.

A scene is drawn in millimetres on the panel (origin at the top-left pixel's corner, x along
columns, y along rows) and sampled per readout mode, so every mode images the same object.
Transmission is the fraction of the incident air kerma reaching the detector (an effective,
kV-independent model). Maps are computed once per (scene, mode) and cached read-only.

Scenes: "open" (nothing), "chest", "hand" (bones in soft tissue) and "qc" (a TG-150/TG-151
style QC phantom: a step wedge, line-pair groups and low-contrast discs on a base plate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SCENES = ("open", "chest", "hand", "qc")

# --- QC phantom ----------------------------------------------------------------------------------
QC_PLATE_TRANSMISSION = 0.6  # the base plate the inserts sit on
AL_MU_PER_MM = 0.15  # effective linear attenuation of the step wedge's aluminium (about 40 keV)
WEDGE_STEPS_MM = (0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0)  # aluminium thickness of each step
LINE_PAIRS_PER_MM = (0.6, 1.0, 1.4, 1.7, 2.2, 2.8, 3.4)  # up to near the native Nyquist (3.6 lp/mm)
BAR_TRANSMISSION = 0.25  # of a lead bar, relative to the plate
DISC_CONTRASTS = (0.01, 0.02, 0.03, 0.05, 0.08, 0.12)  # 1 - T(disc) / T(plate)
DISC_DIAMETER_MM = 12.0

# --- hand phantom --------------------------------------------------------------------------------
HAND_SOFT_TRANSMISSION = 0.55  # soft tissue (about 25 mm of water-equivalent)
HAND_BONE_TRANSMISSION = 0.25  # bone in soft tissue

Box = tuple[float, float, float, float]  # left, top, right, bottom in mm on the panel


@dataclass(frozen=True)
class Step:
    box: Box
    aluminium_mm: float
    transmission: float


@dataclass(frozen=True)
class LinePairGroup:
    box: Box
    lp_per_mm: float
    bar_transmission: float  # of the bars (absolute); the gaps are the plate


@dataclass(frozen=True)
class Disc:
    centre: tuple[float, float]  # x, y mm
    diameter_mm: float
    contrast: float
    transmission: float


@dataclass(frozen=True)
class QcLayout:
    """The QC phantom's geometry and its known values (ground truth for tests)."""

    plate: Box
    plate_transmission: float
    steps: tuple[Step, ...]
    line_pairs: tuple[LinePairGroup, ...]
    discs: tuple[Disc, ...]


def qc_layout(panel_mm: float) -> QcLayout:
    """The QC phantom centred on a square panel of side ``panel_mm``."""
    c, t0 = panel_mm / 2, QC_PLATE_TRANSMISSION
    steps = tuple(Step((c - 140 + 40 * i, c - 130, c - 100 + 40 * i, c - 80), al,
                       t0 * math.exp(-AL_MU_PER_MM * al)) for i, al in enumerate(WEDGE_STEPS_MM))
    groups = tuple(LinePairGroup((c - 140 + 40 * i, c - 60, c - 110 + 40 * i, c), f, t0 * BAR_TRANSMISSION)
                   for i, f in enumerate(LINE_PAIRS_PER_MM))
    discs = tuple(Disc((c - 125 + 50 * i, c + 45), DISC_DIAMETER_MM, k, t0 * (1 - k))
                  for i, k in enumerate(DISC_CONTRASTS))
    return QcLayout((c - 150, c - 150, c + 150, c + 150), t0, steps, groups, discs)


@dataclass(frozen=True)
class Capsule:
    a: tuple[float, float]
    b: tuple[float, float]
    radius_mm: float


@dataclass(frozen=True)
class HandLayout:
    soft: tuple[Capsule, ...]  # palm and fingers
    bones: tuple[Capsule, ...]  # metacarpals and phalanges


def hand_layout(panel_mm: float) -> HandLayout:
    """A left hand, palm down, fingers up, centred on the panel."""
    c = panel_mm / 2
    wrist = (c, c + 140)
    soft = [Capsule((c, c + 20), (c, c + 120), 55.0)]  # the palm and wrist
    bones = [Capsule((c - 25, c + 125), (c + 25, c + 125), 9.0)]  # carpals, as one bar
    for k, angle in enumerate((-20.0, -8.0, 0.0, 8.0, 18.0)):
        rad = math.radians(angle)
        dx, dy = math.sin(rad), -math.cos(rad)
        base = (c + (k - 2) * 24.0, c + 10)
        length = (70.0, 95.0, 100.0, 92.0, 75.0)[k]
        tip = (base[0] + dx * length, base[1] + dy * length)
        soft.append(Capsule(base, tip, 10.0))
        # Metacarpal from the wrist towards the finger's base, then three phalanges with joint gaps.
        meta_a = (wrist[0] + (base[0] - wrist[0]) * 0.3, wrist[1] - 25)
        bones.append(Capsule(meta_a, (base[0], base[1] + 4), 4.5))
        s = 6.0
        for frac in (0.42, 0.32, 0.20):
            seg = length * frac - 5.0
            a = (base[0] + dx * s, base[1] + dy * s)
            b = (base[0] + dx * (s + seg), base[1] + dy * (s + seg))
            bones.append(Capsule(a, b, 3.8))
            s += seg + 5.0
    return HandLayout(tuple(soft), tuple(bones))


# --- sampling ------------------------------------------------------------------------------------


def _centres(n: int, pitch_mm: float) -> np.ndarray:
    return ((np.arange(n, dtype=np.float64) + 0.5) * pitch_mm).astype(np.float64)


def box_pixels(box: Box, pitch_mm: float, n: int) -> tuple[slice, slice]:
    """The rows and columns whose pixel centres lie inside ``box`` (as slices)."""
    left, top, right, bottom = box
    c0, c1 = (min(max(math.ceil(v / pitch_mm - 0.5), 0), n) for v in (left, right))
    r0, r1 = (min(max(math.ceil(v / pitch_mm - 0.5), 0), n) for v in (top, bottom))
    return slice(r0, r1), slice(c0, c1)


def _fill_capsules(mask: np.ndarray, capsules: tuple[Capsule, ...], pitch_mm: float) -> None:
    n = mask.shape[0]
    for cap in capsules:
        (ax, ay), (bx, by), r = cap.a, cap.b, cap.radius_mm
        rows, cols = box_pixels((min(ax, bx) - r, min(ay, by) - r, max(ax, bx) + r, max(ay, by) + r), pitch_mm, n)
        ys = _centres(n, pitch_mm)[rows][:, None]
        xs = _centres(n, pitch_mm)[cols][None, :]
        vx, vy = bx - ax, by - ay
        t = np.clip(((xs - ax) * vx + (ys - ay) * vy) / max(vx * vx + vy * vy, 1e-9), 0.0, 1.0)
        d2 = (xs - ax - t * vx) ** 2 + (ys - ay - t * vy) ** 2
        mask[rows, cols] |= d2 <= r * r


def bar_fraction(columns: int, pitch_mm: float, x0: float, x1: float, lp_per_mm: float) -> np.ndarray:
    """Per column, the fraction of the pixel's aperture covered by bars of a group spanning
    [x0, x1) mm whose bars start at x0 (a bar then a gap, each half a period)."""
    def covered(x: np.ndarray) -> np.ndarray:  # bar length in [x0, x) mm
        u = (np.clip(x, x0, x1) - x0) * lp_per_mm
        return (np.floor(u) * 0.5 + np.minimum(u - np.floor(u), 0.5)) / lp_per_mm

    edges = np.arange(columns + 1, dtype=np.float64) * pitch_mm
    return (covered(edges[1:]) - covered(edges[:-1])) / pitch_mm


def hand_labels(rows: int, pitch_mm: float) -> np.ndarray:
    """0 air, 1 soft tissue, 2 bone (pixel centres), for a square panel of ``rows`` pixels."""
    layout = hand_layout(rows * pitch_mm)
    soft = np.zeros((rows, rows), bool)
    bone = np.zeros((rows, rows), bool)
    _fill_capsules(soft, layout.soft, pitch_mm)
    _fill_capsules(bone, layout.bones, pitch_mm)
    labels = soft.astype(np.uint8)
    labels[bone & soft] = 2
    return labels


def _chest(rows: int) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:rows].astype(np.float32)
    cy = cx = rows / 2
    body = np.clip(1 - (((xx - cx) / (0.42 * rows)) ** 2), 0, 1)
    lungs = (np.exp(-((np.abs(xx - cx) - 0.18 * rows) / (0.1 * rows)) ** 2)
             * np.exp(-((yy - cy * 0.9) / (0.3 * rows)) ** 2))
    spine = np.exp(-((xx - cx) / (0.04 * rows)) ** 2)
    t = 1.0 - 0.85 * body + 0.55 * lungs - 0.12 * spine
    return np.clip(t, 0.03, 1.0).astype(np.float32)


def _qc(rows: int, pitch_mm: float) -> np.ndarray:
    layout = qc_layout(rows * pitch_mm)
    t = np.ones((rows, rows), np.float32)
    t[box_pixels(layout.plate, pitch_mm, rows)] = layout.plate_transmission
    for step in layout.steps:
        t[box_pixels(step.box, pitch_mm, rows)] = step.transmission
    for g in layout.line_pairs:
        rs, _ = box_pixels(g.box, pitch_mm, rows)
        frac = bar_fraction(rows, pitch_mm, g.box[0], g.box[2], g.lp_per_mm)
        cols = np.flatnonzero(frac > 0)
        row = layout.plate_transmission + frac[cols] * (g.bar_transmission - layout.plate_transmission)
        t[rs, cols] = row[None, :].astype(np.float32)
    centres = _centres(rows, pitch_mm)
    for d in layout.discs:
        r = d.diameter_mm / 2
        (x, y) = d.centre
        rs, cs = box_pixels((x - r, y - r, x + r, y + r), pitch_mm, rows)
        inside = (centres[rs][:, None] - y) ** 2 + (centres[cs][None, :] - x) ** 2 <= r * r
        t[rs, cs] = np.where(inside, np.float32(d.transmission), t[rs, cs])
    return t


@lru_cache(maxsize=16)
def transmission_map(scene: str, rows: int, pitch_mm: float) -> np.ndarray | None:
    """Fraction of the beam reaching each pixel of a square ``rows`` x ``rows`` panel (None for
    "open"). Cached and read-only: the same object every call."""
    if scene == "open":
        return None
    if scene == "chest":
        t = _chest(rows)
    elif scene == "hand":
        labels = hand_labels(rows, pitch_mm)
        t = np.choose(labels, [np.float32(1.0), np.float32(HAND_SOFT_TRANSMISSION),
                               np.float32(HAND_BONE_TRANSMISSION)]).astype(np.float32)
    elif scene == "qc":
        t = _qc(rows, pitch_mm)
    else:
        raise ValueError(f"unknown scene {scene!r}; scenes: {', '.join(SCENES)}")
    t.setflags(write=False)
    return t


def scene_truth(scene: str, rows: int, pitch_mm: float) -> dict[str, object]:
    """The scene's known values in one mode's pixels (JSON-ready; rows and columns as
    [start, end) ranges): what tests compare a driver's frame with."""
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; scenes: {', '.join(SCENES)}")
    truth: dict[str, object] = {"scene": scene, "pixel_spacing_mm": pitch_mm,
                                "nyquist_lp_per_mm": 1 / (2 * pitch_mm)}

    def px(box: Box) -> dict[str, list[int]]:
        rs, cs = box_pixels(box, pitch_mm, rows)
        return {"rows": [rs.start, rs.stop], "columns": [cs.start, cs.stop]}

    if scene == "hand":
        truth.update(air_transmission=1.0, soft_transmission=HAND_SOFT_TRANSMISSION,
                     bone_transmission=HAND_BONE_TRANSMISSION)
    elif scene == "qc":
        q = qc_layout(rows * pitch_mm)
        truth["plate"] = {**px(q.plate), "transmission": q.plate_transmission}
        truth["steps"] = [{**px(s.box), "aluminium_mm": s.aluminium_mm, "transmission": s.transmission}
                          for s in q.steps]
        truth["line_pairs"] = [{**px(g.box), "lp_per_mm": g.lp_per_mm, "bar_transmission": g.bar_transmission}
                               for g in q.line_pairs]
        truth["discs"] = [{"centre_px": [d.centre[1] / pitch_mm - 0.5, d.centre[0] / pitch_mm - 0.5],
                           "radius_px": d.diameter_mm / 2 / pitch_mm, "contrast": d.contrast,
                           "transmission": d.transmission} for d in q.discs]
    return truth
