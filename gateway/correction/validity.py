"""Whether a calibration may still correct the next exposure: its age and the panel's drift since.

Checked before the tube fires. Each limit warns or blocks, as configured: age warns past
warn_age_days and blocks past max_age_days; the panel's temperature, compared with the one
the set's offset was made at (an offset refresh renews it), warns past
warn_temperature_drift_c and blocks past max_temperature_drift_c (a limit of 0 is off). A block raises
CalibrationError saying to recalibrate; the caller refuses the exposure with no X-rays given.
"""

from __future__ import annotations

import logging
from datetime import datetime

from gateway.config import CalibrationConfig
from gateway.correction.calibration_set import CalibrationInfo
from gateway.correction.store import calibrated_at, check_age
from gateway.errors import CalibrationError

LOGGER = logging.getLogger(__name__)


def check_validity(cal: CalibrationInfo, limits: CalibrationConfig, *, now: datetime,
                   temperature_c: float | None) -> list[str]:
    """The warnings for `cal` at `now` with the panel at `temperature_c` (None: not known, not
    checked), each also logged; CalibrationError where a limit blocks."""
    key = cal.key
    where = f"calibration {cal.calibration_id} for detector {key.detector_serial} mode {key.mode}"
    warnings: list[str] = []
    check_age(cal, max_age_days=limits.max_age_days, now=now)
    age_days = (now - calibrated_at(cal)).total_seconds() / 86400.0
    if limits.warn_age_days and age_days > limits.warn_age_days:
        warnings.append(f"{where} is {age_days:.1f} days old (warning from {limits.warn_age_days:g} days, refused "
                        f"after {limits.max_age_days:g}): plan a recalibration")
    if temperature_c is not None:
        drift = temperature_c - cal.temperature_c
        if limits.max_temperature_drift_c and abs(drift) > limits.max_temperature_drift_c:
            raise CalibrationError(
                f"the panel is at {temperature_c:.1f} C, {drift:+.1f} C from the {cal.temperature_c:.1f} C of "
                f"{where} (limit {limits.max_temperature_drift_c:g} C): the offset has drifted; recalibrate "
                "(`dxgate calibrate`, or an offset refresh) before exposing")
        if limits.warn_temperature_drift_c and abs(drift) > limits.warn_temperature_drift_c:
            warnings.append(f"the panel is at {temperature_c:.1f} C, {drift:+.1f} C from the {cal.temperature_c:.1f} "
                            f"C of {where}: the offset may have drifted; recalibrate soon")
    for w in warnings:
        LOGGER.warning("%s", w)
    return warnings
