"""Stage: dicom. Corrected frame + exposure + worklist item -> DX For Presentation dataset."""

from gateway.dicom.anatomy import AnatomyError, check_anatomy
from gateway.dicom.dx import DX_FOR_PRESENTATION, DicomBuildError, build_dx
from gateway.dicom.encode import EncodeError, to_bytes
from gateway.uids import is_valid_uid, new_uid

__all__ = ["DX_FOR_PRESENTATION", "AnatomyError", "DicomBuildError", "EncodeError", "build_dx", "check_anatomy",
           "is_valid_uid", "new_uid",
           "to_bytes"]
