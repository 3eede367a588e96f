"""Where the simulated panel's defects lie: one mask per ASTM E2597 class, planted apart.

Every isolated defect and every cluster keeps two good pixels between itself and any other
defect, so that the class the simulator planted is the class a calibration should report
(two planted single pixels never touch and so never make a cluster by chance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SINGLE_CLASSES = ("dead", "hot", "over", "under", "noisy", "lag")
GAP = 2  # good pixels kept between planted defects
MAX_CLUSTER = 12  # pixels


@dataclass(frozen=True)
class DefectLayout:
    """Boolean masks of the planted defects; clusters also as (row, column) lists."""

    single: dict[str, np.ndarray]
    line: np.ndarray
    line_dead: np.ndarray  # the line pixels that do not respond at all (the others respond weakly)
    cluster: np.ndarray
    clusters: tuple[tuple[tuple[int, int], ...], ...]


def plant(rng: np.random.Generator, shape: tuple[int, int], fraction: float) -> DefectLayout:
    """Two column segments and one row segment, clusters of 2..12 pixels, and single defects of
    each class in equal numbers (`fraction` of the pixels across the single classes)."""
    rows, cols = shape
    taken = np.zeros(shape, bool)  # defects and their GAP margins
    line = np.zeros(shape, bool)
    line_dead = np.zeros(shape, bool)
    for i, axis in enumerate((0, 0, 1)):
        length = rows if axis == 0 else cols
        across = cols if axis == 0 else rows
        seg = int(rng.integers(length // 4, length * 3 // 5))
        for _ in range(200):
            start = int(rng.integers(0, length - seg))
            at = int(rng.integers(16, across - 16))
            window = taken[start:start + seg, at] if axis == 0 else taken[at, start:start + seg]
            if not window.any():
                break
        else:  # pragma: no cover - the panel is far larger than three lines need
            raise ValueError(f"no room for line {i} on a {rows}x{cols} panel")
        sl = (slice(start, start + seg), at) if axis == 0 else (at, slice(start, start + seg))
        line[sl] = True
        if i == 0:
            line_dead[sl] = True
        _reserve(taken, line, 8)  # lines are repaired from neighbouring columns: keep those good
    cluster = np.zeros(shape, bool)
    clusters = []
    for _ in range(max(3, int(fraction * rows * cols / 200))):
        blob = _blob(rng, shape, int(rng.integers(2, MAX_CLUSTER + 1)))
        if any(taken[max(0, y - GAP):y + GAP + 1, max(0, x - GAP):x + GAP + 1].any() for y, x in blob):
            continue
        for y, x in blob:
            cluster[y, x] = True
        _reserve(taken, cluster, GAP)
        clusters.append(tuple(blob))
    n_each = max(1, int(fraction * rows * cols / len(SINGLE_CLASSES)))
    single = {name: np.zeros(shape, bool) for name in SINGLE_CLASSES}
    order = [name for name in SINGLE_CLASSES for _ in range(n_each)]
    candidates = rng.choice(rows * cols, 3 * len(order), replace=False)
    k = 0
    for flat in candidates:
        if k == len(order):
            break
        y, x = divmod(int(flat), cols)
        if taken[y, x]:
            continue
        single[order[k]][y, x] = True
        taken[max(0, y - GAP):y + GAP + 1, max(0, x - GAP):x + GAP + 1] = True
        k += 1
    return DefectLayout(single=single, line=line, line_dead=line_dead, cluster=cluster, clusters=tuple(clusters))


def _reserve(taken: np.ndarray, mask: np.ndarray, margin: int) -> None:
    ys, xs = np.nonzero(mask)
    for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
        taken[max(0, y - margin):y + margin + 1, max(0, x - margin):x + margin + 1] = True


def _blob(rng: np.random.Generator, shape: tuple[int, int], size: int) -> list[tuple[int, int]]:
    """A connected group of `size` pixels grown from a random seed away from the edges."""
    y, x = int(rng.integers(8, shape[0] - 8)), int(rng.integers(8, shape[1] - 8))
    blob = [(y, x)]
    while len(blob) < size:
        by, bx = blob[int(rng.integers(0, len(blob)))]
        dy, dx = (int(v) for v in rng.integers(-1, 2, 2))
        p = (min(max(by + dy, 4), shape[0] - 5), min(max(bx + dx, 4), shape[1] - 5))
        if p not in blob:
            blob.append(p)
    return blob
