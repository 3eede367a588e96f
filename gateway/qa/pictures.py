"""Small PNG pictures of a calibration set and its QA figures, for the calibration wizard:
the offset and gain maps (windowed between their 1st and 99th percentiles), the defect map
(a colour per class) and a chart of the QA checks against their limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from gateway.correction import CalibrationSet
from gateway.qa.html import CLASS_COLOURS, _defects, _grey

MAPS = ("offset", "gain", "defects")
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PASS, _FAIL, _INK = (40, 140, 40), (40, 40, 200), (30, 30, 30)  # BGR


def png(img: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(data.tobytes())


def map_png(cal: CalibrationSet, which: str) -> bytes:
    """The offset, gain or defect map of `cal` as a small PNG."""
    if which == "defects":
        return png(_defects(cal.defects))
    if which in ("offset", "gain"):
        return png(_grey(getattr(cal, which)))
    raise ValueError(f"no map {which!r} (one of {', '.join(MAPS)})")


def checks_png(checks: Sequence[Mapping[str, Any]], defect_counts: Mapping[str, int]) -> bytes:
    """Each QA check as a bar of its value over its limit (green pass, red fail; the limit is the
    black line), then the defect count of each class."""
    rows = len(checks) + len(defect_counts) + 2
    width, label_w, bar_w, line_h = 720, 300, 300, 26
    img = np.full((rows * line_h + 16, width, 3), 255, np.uint8)
    y = 22
    cv2.putText(img, "check (bar: value / limit)", (8, y), _FONT, 0.5, _INK, 1, cv2.LINE_AA)
    for c in checks:
        y += line_h
        value, limit, passed = float(c["value"]), float(c["limit"]), bool(c["passed"])
        ratio = value / limit if limit > 0 else (0.0 if value <= 0 else 2.0)
        cv2.putText(img, str(c["name"])[:38], (8, y), _FONT, 0.45, _INK, 1, cv2.LINE_AA)
        end = label_w + int(min(ratio, 2.0) / 2.0 * bar_w)
        cv2.rectangle(img, (label_w, y - 14), (max(end, label_w + 1), y + 2), _PASS if passed else _FAIL, -1)
        mid = label_w + bar_w // 2
        cv2.line(img, (mid, y - 18), (mid, y + 6), (0, 0, 0), 2)
        cv2.putText(img, ("pass " if passed else "FAIL ") + f"{value:.4g}/{limit:.4g}", (label_w + bar_w + 10, y),
                    _FONT, 0.45, _PASS if passed else _FAIL, 1, cv2.LINE_AA)
    y += line_h
    cv2.putText(img, "defects by class", (8, y), _FONT, 0.5, _INK, 1, cv2.LINE_AA)
    top = max([1, *defect_counts.values()])
    colours = {c.name.lower(): colour for c, colour in CLASS_COLOURS.items()}
    for name, n in defect_counts.items():
        y += line_h
        cv2.putText(img, name.lower(), (8, y), _FONT, 0.45, _INK, 1, cv2.LINE_AA)
        colour = tuple(int(v) for v in colours.get(name.lower(), (128, 128, 128)))
        cv2.rectangle(img, (label_w, y - 14), (label_w + max(1, int(n / top * bar_w)), y + 2), (0, 0, 0), 1)
        cv2.rectangle(img, (label_w + 1, y - 13), (label_w + max(1, int(n / top * bar_w)) - 1, y + 1), colour, -1)
        cv2.putText(img, str(n), (label_w + bar_w + 10, y), _FONT, 0.45, _INK, 1, cv2.LINE_AA)
    return png(img)


__all__ = ["MAPS", "checks_png", "map_png", "png"]
