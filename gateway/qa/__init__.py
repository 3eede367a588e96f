"""Detector QA a physicist signs: AAPM TG-150 uniformity of corrected flats, defect counts,
pass/fail against configured limits (`dxgate qa`)."""

from gateway.qa.linearity import Linearity, linearity
from gateway.qa.report import QaLimits, QaReport, evaluate
from gateway.qa.uniformity import Uniformity, uniformity

__all__ = ["Linearity", "QaLimits", "QaReport", "Uniformity", "evaluate", "linearity", "uniformity"]
