"""The QA report: uniformity of corrected flats and the calibration's defects, against limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cv2
import numpy as np

from gateway.correction import CalibrationSet, DefectClass
from gateway.qa.linearity import Linearity
from gateway.qa.uniformity import ROI, Uniformity, uniformity


@dataclass(frozen=True)
class QaLimits:
    """Pass/fail limits (fractions; see gateway.config QaLimitsConfig for their meaning)."""

    global_signal_nonuniformity: float = 0.02
    local_signal_nonuniformity: float = 0.01
    global_noise_nonuniformity: float = 0.15
    local_noise_nonuniformity: float = 0.10
    global_snr_nonuniformity: float = 0.15
    local_snr_nonuniformity: float = 0.10
    max_defect_fraction: float = 0.01
    max_cluster_pixels: int = 50
    max_linearity_deviation: float = 0.05


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    passed: bool


@dataclass(frozen=True)
class QaReport:
    detector_serial: str
    mode: str
    calibration_id: str
    made_at: datetime
    flats: int
    uniformity: Uniformity  # the worst figure of each kind over the flats
    defect_counts: dict[str, int]
    defect_fraction: float
    largest_cluster: int
    checks: tuple[Check, ...]
    linearity: Linearity | None = None
    trend: dict[str, list[tuple[str, float]]] = dataclasses.field(default_factory=dict)  # check: earlier values

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["made_at"] = self.made_at.isoformat()
        d["passed"] = self.passed
        d["method"] = f"AAPM TG-150: {ROI}x{ROI}-pixel ROIs on offset/gain/defect-corrected flats"
        return d

    def to_text(self) -> str:
        u = self.uniformity
        lines = [
            f"Detector QA - detector {self.detector_serial}, mode {self.mode}",
            f"calibration {self.calibration_id}; {self.flats} flat(s); {self.made_at:%Y-%m-%d %H:%M} UTC",
            f"method: AAPM TG-150, {ROI}x{ROI}-pixel ROIs ({u.roi_grid[0]}x{u.roi_grid[1]})",
            f"mean signal {u.mean_signal:.1f}, noise {u.mean_noise:.2f}, SNR {u.mean_snr:.1f}",
            "defects: " + ", ".join(f"{k} {v}" for k, v in self.defect_counts.items())
            + f"; largest cluster {self.largest_cluster} pixels",
            "",
            f"{'check':<34}{'value':>10}{'limit':>10}{'previous':>10}  result",
        ]
        for c in self.checks:
            fraction = c.name.endswith(("nonuniformity", "deviation")) or c.name == "defect fraction"

            def fmt(v: float, fraction: bool = fraction) -> str:
                return f"{100 * v:.3f} %" if fraction else f"{v:g}"

            before = self.trend.get(c.name) or []
            previous = fmt(before[-1][1]) if before else "-"
            lines.append(f"{c.name:<34}{fmt(c.value):>10}{fmt(c.limit):>10}{previous:>10}  "
                         f"{'pass' if c.passed else 'FAIL'}")
        if self.linearity is not None:
            lin = self.linearity
            points = ", ".join(f"{m:g} mAs: {v:.0f}" for m, v in zip(lin.mas, lin.signal, strict=True))
            lines += ["", f"linearity: {points}; {lin.counts_per_mas:.1f} counts/mAs, R^2 {lin.r_squared:.5f}"]
        lines += ["", "RESULT: " + ("PASS" if self.passed else "FAIL")]
        return "\n".join(lines) + "\n"


def largest_cluster(defects: np.ndarray) -> int:
    """Pixels in the largest 8-connected group of defective pixels outside line defects."""
    bad = (defects != DefectClass.GOOD) & (defects != DefectClass.LINE)
    n, _, stats, _ = cv2.connectedComponentsWithStats(bad.astype(np.uint8), connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0


def evaluate(corrected: Sequence[np.ndarray], cal: CalibrationSet, limits: QaLimits, *, made_at: datetime,
             roi: int = ROI, linearity: Linearity | None = None) -> QaReport:
    """The report for corrected flat images taken with calibration `cal` (and, when measured, the
    response linearity over several doses)."""
    if not corrected:
        raise ValueError("QA needs at least one corrected flat")
    per_flat = [uniformity(img, roi) for img in corrected]
    worst = {f.name: max(getattr(u, f.name) for u in per_flat) for f in dataclasses.fields(Uniformity)
             if f.name.startswith(("global_", "local_"))}
    u = dataclasses.replace(per_flat[0], **worst)
    counts = cal.defect_counts()
    fraction = sum(counts.values()) / cal.defects.size
    cluster = largest_cluster(cal.defects)
    checks = [Check(f"{kind} {what} nonuniformity", getattr(u, f"{kind}_{what}"),
                    getattr(limits, f"{kind}_{what}_nonuniformity"),
                    getattr(u, f"{kind}_{what}") <= getattr(limits, f"{kind}_{what}_nonuniformity"))
              for what in ("signal", "noise", "snr") for kind in ("global", "local")]
    checks.append(Check("defect fraction", fraction, limits.max_defect_fraction,
                        fraction <= limits.max_defect_fraction))
    checks.append(Check("largest cluster (pixels)", cluster, limits.max_cluster_pixels,
                        cluster <= limits.max_cluster_pixels))
    if linearity is not None:
        checks.append(Check("linearity deviation", linearity.max_deviation, limits.max_linearity_deviation,
                            linearity.max_deviation <= limits.max_linearity_deviation))
    return QaReport(detector_serial=cal.key.detector_serial, mode=cal.key.mode, calibration_id=cal.calibration_id,
                    made_at=made_at, flats=len(corrected), uniformity=u, defect_counts=counts,
                    defect_fraction=fraction, largest_cluster=cluster, checks=tuple(checks), linearity=linearity)
