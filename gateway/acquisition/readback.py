"""Sanity limits for what a generator reports it delivered.

A readback value that is not a finite number inside these limits (NaN, a negative kV, mAs of
1e12) is not a measurement: it becomes None, is reported as a problem, and never reaches a
DICOM object. The limits are wide — any real radiographic generator fits inside them.
"""

from __future__ import annotations

import math

from gateway.types import ExposureReadback

LIMITS: dict[str, tuple[float, float]] = {
    "kvp": (20.0, 200.0),  # kV
    "mas": (0.0, 2000.0),  # mAs
    "exposure_time_ms": (0.0, 20_000.0),  # ms
    "dap_dgy_cm2": (0.0, 10_000.0),  # dGy*cm2
}


def check_readback(readback: ExposureReadback) -> tuple[ExposureReadback, tuple[str, ...]]:
    """The readback with every insane value replaced by None, and one problem per such value."""
    values: dict[str, float | None] = {}
    problems: list[str] = []
    for name, (lo, hi) in LIMITS.items():
        value = getattr(readback, name)
        if value is None:
            problems.append(f"generator readback {name} missing")
        elif not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
            problems.append(f"generator readback {name}={value!r} outside [{lo:g}, {hi:g}]; not recorded")
            value = None
        values[name] = value
    return ExposureReadback(**values), tuple(problems)
