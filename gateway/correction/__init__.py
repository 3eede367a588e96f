"""Stage: correction. Calibrate a detector, keep its calibration sets, correct its frames.

calibrate() makes a CalibrationSet from dark and flat frames; CalibrationStore keeps sets
versioned and checksummed per serial and mode; Corrector applies one to raw frames;
exposure_index() gives the IEC 62494-1 EI/DI of a corrected frame.
"""

from gateway.correction.apply import Corrector
from gateway.correction.calibrate import CalibrationBuilder, calibrate, refresh_offset
from gateway.correction.calibration_set import CalibrationInfo, CalibrationSet, DefectClass
from gateway.correction.exposure_index import exposure_index
from gateway.correction.frame_checks import CalibrationLimits
from gateway.correction.store import CalibrationStore, check_age
from gateway.correction.validity import check_validity

__all__ = ["CalibrationBuilder", "CalibrationInfo", "CalibrationLimits", "CalibrationSet", "CalibrationStore",
           "Corrector", "DefectClass", "calibrate", "check_age", "check_validity", "exposure_index", "refresh_offset"]
