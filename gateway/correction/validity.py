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
                   temperature_c: float | None, logged: set[str] | None = None) -> list[str]:
    """The warnings for `cal` at `now` with the panel at `temperature_c` (None: not known, not
    checked); CalibrationError where a limit blocks. Each warning is logged when it begins:
    `logged` (kept by the caller across checks) holds those already said, so a release re-checked
    every few seconds while armed does not repeat them; without it every warning is logged."""
    key = cal.key
    where = f"calibration {cal.calibration_id} for detector {key.detector_serial} mode {key.mode}"
    warnings: dict[str, str] = {}  # what it is about (calibration and limit) -> the warning
    check_age(cal, max_age_days=limits.max_age_days, now=now)
    age_days = (now - calibrated_at(cal)).total_seconds() / 86400.0
    if limits.warn_age_days and age_days > limits.warn_age_days:
        warnings[f"age {cal.calibration_id}"] = (
            f"{where} is {age_days:.1f} days old (warning from {limits.warn_age_days:g} days, refused after "
            f"{limits.max_age_days:g}): plan a recalibration")
    if temperature_c is not None:
        drift = temperature_c - cal.temperature_c
        if limits.max_temperature_drift_c and abs(drift) > limits.max_temperature_drift_c:
            raise CalibrationError(
                f"the panel is at {temperature_c:.1f} C, {drift:+.1f} C from the {cal.temperature_c:.1f} C of "
                f"{where} (limit {limits.max_temperature_drift_c:g} C): the offset has drifted; recalibrate "
                "(`dxgate calibrate`, or an offset refresh) before exposing")
        if limits.warn_temperature_drift_c and abs(drift) > limits.warn_temperature_drift_c:
            warnings[f"drift {cal.calibration_id} {cal.temperature_c}"] = (
                f"the panel is at {temperature_c:.1f} C, {drift:+.1f} C from the {cal.temperature_c:.1f} C of "
                f"{where}: the offset may have drifted; recalibrate soon")
    for about, w in warnings.items():
        if logged is None or about not in logged:
            LOGGER.warning("%s", w)
    if logged is not None:  # a warning that ended is said again if it comes back
        logged.intersection_update(warnings)
        logged.update(warnings)
    return list(warnings.values())
