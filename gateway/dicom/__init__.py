"""Stage: dicom. Corrected frame + exposure + worklist item -> DX For Presentation (and For
Processing) datasets, and the study's X-Ray Radiation Dose SR."""

from gateway.dicom.anatomy import AnatomyError, check_anatomy
from gateway.dicom.dx import DX_FOR_PRESENTATION, DX_FOR_PROCESSING, DicomBuildError, build_dx, collimated_field
from gateway.dicom.encode import EncodeError, to_bytes
from gateway.dicom.irradiation import irradiation_event_uid
from gateway.dicom.rdsr import XRAY_RADIATION_DOSE_SR, IrradiationEvent, build_rdsr
from gateway.uids import is_valid_uid, new_uid

__all__ = ["DX_FOR_PRESENTATION", "DX_FOR_PROCESSING", "XRAY_RADIATION_DOSE_SR", "AnatomyError", "DicomBuildError",
           "EncodeError", "IrradiationEvent", "build_dx", "build_rdsr", "check_anatomy", "collimated_field",
           "irradiation_event_uid",
           "is_valid_uid", "new_uid", "to_bytes"]
