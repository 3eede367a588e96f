"""Defect repair tables, computed once per calibration set: each defective pixel from good pixels only.

Isolated defects take the mean of the good pixels of the smallest square ring around them
(3x3, then 5x5, ...). Pixels of a line or a cluster take the nearest good pixels along rows and
columns instead, weighted by inverse distance: a column line from the nearest good columns on
either side, a row line from the nearest good rows, a cluster from all four directions; where
two lines cross (nothing good along the row or column), the ring again.
"""

from __future__ import annotations

import numpy as np

from gateway.correction.calibration_set import DefectClass
from gateway.errors import CalibrationError

MAX_REPAIR_RADIUS = 5  # an isolated defect with no good pixel within 11x11 cannot be repaired
MAX_REACH = 16  # a line or cluster pixel with no good pixel within this many pixels along a row or column

_DIRECTIONAL = (DefectClass.LINE, DefectClass.CLUSTER)
_STEPS = ((0, -1), (0, 1), (-1, 0), (1, 0))  # left, right, up, down


def repair_tables(defects: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index tables for repairing each defective pixel from good pixels.

    Returns (defect flat indices (n,), neighbour flat indices (n, k), weights (n, k) summing to 1);
    unused slots point at pixel 0 with weight 0. CalibrationError when a defect has no good
    pixel within reach.
    """
    rows, cols = defects.shape
    good = defects == DefectClass.GOOD
    dy, dx = np.nonzero(~good)
    directional = np.isin(defects[dy, dx], [int(c) for c in _DIRECTIONAL])
    chosen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [(np.empty(0, np.intp),) * 2 + (np.empty(0),)] * dy.size
    stranded = _lines(good, dy, dx, np.nonzero(directional)[0], chosen)
    _ring(good, dy, dx, np.concatenate([np.nonzero(~directional)[0], stranded]), chosen)
    k = max((c[0].size for c in chosen), default=1)
    index = np.zeros((dy.size, k), np.intp)
    weight = np.zeros((dy.size, k), np.float32)
    for i, (ny_i, nx_i, w_i) in enumerate(chosen):
        index[i, :ny_i.size] = ny_i * cols + nx_i
        weight[i, :ny_i.size] = w_i / w_i.sum()
    return (dy * cols + dx).astype(np.intp), index, weight


def _ring(good: np.ndarray, dy: np.ndarray, dx: np.ndarray, pending: np.ndarray,
          chosen: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    rows, cols = good.shape
    for radius in range(1, MAX_REPAIR_RADIUS + 1):
        if pending.size == 0:
            return
        oy, ox = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        keep = (oy != 0) | (ox != 0)
        oy, ox = oy[keep], ox[keep]
        ny = dy[pending, None] + oy[None, :]
        nx = dx[pending, None] + ox[None, :]
        inside = (ny >= 0) & (ny < rows) & (nx >= 0) & (nx < cols)
        usable = inside.copy()
        usable[inside] = good[ny[inside], nx[inside]]
        found = usable.any(axis=1)
        for row in np.nonzero(found)[0]:
            sel = usable[row]
            chosen[pending[row]] = (ny[row][sel], nx[row][sel], np.ones(int(sel.sum())))
        pending = pending[~found]
    if pending.size:
        y, x = int(dy[pending[0]]), int(dx[pending[0]])
        side = 2 * MAX_REPAIR_RADIUS + 1
        raise CalibrationError(
            f"{pending.size} defective pixels (first at row {y}, column {x}) have no good pixel within "
            f"{side}x{side}: defect cluster too large to repair")


def _lines(good: np.ndarray, dy: np.ndarray, dx: np.ndarray, which: np.ndarray,
           chosen: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Nearest good pixel in each of the four directions; a pair across a line is preferred.
    Returns the pixels with none along their row or column (where two lines cross): for the ring."""
    stranded: list[int] = []
    if which.size == 0:
        return np.empty(0, np.int64)
    rows, cols = good.shape
    y0, x0 = dy[which], dx[which]
    dist = np.zeros((which.size, 4), np.int64)  # 0: none within reach
    for d, (sy, sx) in enumerate(_STEPS):
        todo = np.ones(which.size, bool)
        for step in range(1, MAX_REACH + 1):
            ny, nx = y0 + sy * step, x0 + sx * step
            inside = todo & (ny >= 0) & (ny < rows) & (nx >= 0) & (nx < cols)
            hit = np.zeros(which.size, bool)
            hit[inside] = good[ny[inside], nx[inside]]
            dist[hit, d] = step
            todo &= ~hit
            if not todo.any():
                break
    for i, n in enumerate(which):
        found = dist[i] > 0
        horizontal, vertical = found[0] and found[1], found[2] and found[3]
        use = found.copy()
        if horizontal != vertical:  # a line: interpolate across it, not along it
            use = np.array([horizontal, horizontal, vertical, vertical])
        if not use.any():
            stranded.append(int(n))
            continue
        steps = np.array(_STEPS)[use]
        d = dist[i][use]
        chosen[n] = (y0[i] + steps[:, 0] * d, x0[i] + steps[:, 1] * d, 1.0 / d)
    return np.array(stranded, np.int64)
