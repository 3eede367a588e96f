"""Build a Digital X-Ray Image Storage - For Presentation object from one corrected exposure.

The pixels are stored exactly as the correction stage produced them: linear in dose, higher
value = more X-rays. Shown as film (more X-rays = darker), that is MONOCHROME1, whose matching
Presentation LUT Shape is INVERSE (PS3.3 C.8.11.7.1.2).

Worklist data are copied per PS3.17 Annex J / IHE SWF. The caller passes the UIDs: the Study
Instance UID must be the worklist's when there is one (DESIGN invariant 2), and every UID is
assigned once, before spooling, so resends carry the same identity.
"""

from __future__ import annotations

import logging
import math
import re
import weakref
from datetime import date, datetime, timedelta
from importlib import metadata

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from gateway.codes import code_item
from gateway.collimation import CollimatedField, detect_field
from gateway.config import SiteConfig
from gateway.dicom.anatomy import AnatomyError, View, image_laterality
from gateway.dicom.anatomy import body_part as lookup_body_part
from gateway.dicom.anatomy import view as lookup_view
from gateway.dicom.irradiation import irradiation_event_uid
from gateway.errors import DxgateError
from gateway.histogram import percentiles_u16
from gateway.types import CorrectedFrame, DetectorInfo, Exposure, ExposureIndex, Presentation, WorklistItem
from gateway.uids import is_valid_uid

LOGGER = logging.getLogger(__name__)

DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
DX_FOR_PROCESSING = UID("1.2.840.10008.5.1.4.1.1.1.1.1")
MPPS_SOP_CLASS = UID("1.2.840.10008.3.1.2.3.3")
DETACHED_STUDY_MANAGEMENT = UID("1.2.840.10008.3.1.2.3.1")  # Referenced Study Sequence class (SWF)
DETECTOR_TYPES = ("DIRECT", "SCINTILLATOR", "STORAGE", "FILM")
CHARSET = "ISO_IR 192"
DETECTOR_TEMPERATURE_C = (-40.0, 100.0)
NO_BEAM_UGY = 0.1  # a frame whose brightest pixels saw less has no collimated field to find

# Window from these percentiles of the central half of the image (collimator edges and
# unattenuated beam outside the patient would otherwise dominate).
WINDOW_PERCENTILES = (1.0, 99.0)
_ORIENTATION_RE = re.compile(r"^[LRAPHF]{1,3}$")


class DicomBuildError(DxgateError):
    """The inputs cannot make a valid DX image (bad UID, pixel range, body part...)."""


def build_dx(
    frame: CorrectedFrame,
    exposure: Exposure,
    item: WorklistItem | None,
    ei: ExposureIndex | None,
    *,
    site: SiteConfig,
    detector: DetectorInfo,
    pixel_spacing_mm: tuple[float, float],
    study_uid: str,
    series_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int,
    body_part: str,
    view_position: str,
    now: datetime,
    laterality: str | None = None,
    detector_type: str = "SCINTILLATOR",
    pps_id: str = "",
    pps_start: datetime | None = None,
    mpps_sop_instance_uid: str = "",
    patient_orientation: tuple[str, str] | None = None,
    operator: str = "",
    presentation: Presentation | None = None,
    for_processing: bool = False,
) -> Dataset:
    """A DX For Presentation dataset (with file meta) whose Pixel Data are exactly frame.pixels.

    `laterality` is needed for paired body parts only. `pps_start` (the first exposure of the
    procedure step) dates the study and series so every image of a series agrees; without it
    the exposure time is used. `mpps_sop_instance_uid` references the MPPS when one is used.
    `operator` is the technologist's name (Operators' Name, PN). `presentation` gives the
    processed pixels of a For Presentation image (gateway.presentation); without it the linear
    frame is shown through a window. `for_processing` makes the DX For Processing object
    instead: the linear frame, no presentation processing, its own SOP Instance UID.
    `patient_orientation` (row, column direction, e.g. ("L", "F")) overrides the conventional
    display orientation assumed for the view.
    """
    for name, uid in (("study", study_uid), ("series", series_uid), ("SOP instance", sop_instance_uid),
                      ("MPPS", mpps_sop_instance_uid)):
        if (uid or name != "MPPS") and not is_valid_uid(uid):
            raise DicomBuildError(f"{name} UID {uid!r} is not a valid DICOM UID")
    if item is not None and item.study_instance_uid and item.study_instance_uid != study_uid:
        raise DicomBuildError(
            f"study UID {study_uid} differs from the worklist's {item.study_instance_uid}: "
            "a scheduled image must carry the worklist's Study Instance UID"
        )
    if detector_type not in DETECTOR_TYPES:
        raise DicomBuildError(f"detector type {detector_type!r} is not one of {', '.join(DETECTOR_TYPES)}")
    try:
        part = lookup_body_part(body_part)
        lat = image_laterality(part, laterality)
        coded_view = lookup_view(view_position)
    except AnatomyError as exc:
        raise DicomBuildError(str(exc)) from None
    if patient_orientation is not None and (
            len(patient_orientation) != 2 or not all(_ORIENTATION_RE.match(v) for v in patient_orientation)):
        raise DicomBuildError(f"patient orientation {patient_orientation!r} is not two directions of L R A P H F")
    if any(not (s > 0 and math.isfinite(s)) for s in pixel_spacing_mm):
        raise DicomBuildError(f"pixel spacing {pixel_spacing_mm} mm must be positive")
    if for_processing and presentation is not None:
        raise DicomBuildError("a For Processing image carries the linear frame, never presentation processing")
    sop_class = DX_FOR_PROCESSING if for_processing else DX_FOR_PRESENTATION

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = CHARSET
    started = pps_start or exposure.started_at

    _sop_common(ds, sop_class, sop_instance_uid, now)
    _patient(ds, item)
    _study(ds, item, study_uid, started)
    _series(ds, item, series_uid, series_number, part.term, started,
            pps_id, pps_start, mpps_sop_instance_uid)
    ds.PresentationIntentType = "FOR PROCESSING" if for_processing else "FOR PRESENTATION"
    if operator:
        ds.OperatorsName = operator
    _equipment(ds, site, detector)
    _image(ds, frame, exposure, instance_number, view_position, patient_orientation, now)
    # The dose report's event of this exposure has the same UID (derived from the frame).
    ds.IrradiationEventUID = irradiation_event_uid(site.uid_root, frame.meta)
    if presentation is not None:
        _processed(ds, frame, presentation)
    else:
        _pixels(ds, frame)
    _anatomy(ds, part.code, part.meaning, lat, view_position, coded_view)
    _detector(ds, frame, detector, detector_type, pixel_spacing_mm)
    _collimator(ds, frame)
    _dose(ds, exposure, ei)
    if not for_processing:  # a VOI window is for presentation only (C.8.11.3.1.5)
        _voi(ds, frame.pixels if presentation is None else presentation.pixels)
    ds.AcquisitionContextSequence = Sequence()
    return ds


def _sop_common(ds: Dataset, sop_class: UID, sop_instance_uid: str, now: datetime) -> None:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    ds.InstanceCreationDate = _da(now)
    ds.InstanceCreationTime = _tm(now)
    if now.tzinfo is not None:
        ds.TimezoneOffsetFromUTC = _tz_offset(_local(now))


def _patient(ds: Dataset, item: WorklistItem | None) -> None:
    if item is None:  # unscheduled: Type 2 attributes present but empty
        ds.PatientName = ""
        ds.PatientID = ""
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        return
    ds.PatientName = item.patient_name
    ds.PatientID = item.patient_id
    if item.issuer_of_patient_id:
        ds.IssuerOfPatientID = item.issuer_of_patient_id
    ds.PatientBirthDate = _da(item.patient_birth_date) if item.patient_birth_date else ""
    ds.PatientSex = item.patient_sex if item.patient_sex in ("M", "F", "O") else ""


def _study(ds: Dataset, item: WorklistItem | None, study_uid: str, started: datetime) -> None:
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = _da(started)
    ds.StudyTime = _tm(started)
    ds.ReferringPhysicianName = item.referring_physician if item else ""
    # IHE SWF: Study ID is the Requested Procedure ID.
    ds.StudyID = item.requested_procedure_id if item else ""
    ds.AccessionNumber = group_accession(item)
    if item is not None and item.requested_procedure_description:
        ds.StudyDescription = item.requested_procedure_description
    procedures = list(dict.fromkeys(c for order in requested(item) for c in order.procedure_codes))
    if procedures:
        ds.ProcedureCodeSequence = Sequence([code_item(c.value, c.scheme, c.meaning) for c in procedures])
    refs: list[Dataset] = []
    for order in requested(item):  # the group case: each requested procedure's Referenced Study
        if order.referenced_study_sop_instance_uid and order.referenced_study_sop_instance_uid not in {
                r.ReferencedSOPInstanceUID for r in refs}:
            ref = Dataset()
            ref.ReferencedSOPClassUID = order.referenced_study_sop_class_uid or DETACHED_STUDY_MANAGEMENT
            ref.ReferencedSOPInstanceUID = order.referenced_study_sop_instance_uid
            refs.append(ref)
    if refs:
        ds.ReferencedStudySequence = Sequence(refs)


def _series(ds: Dataset, item: WorklistItem | None, series_uid: str, series_number: int, part: str,
            started: datetime, pps_id: str, pps_start: datetime | None, mpps_uid: str) -> None:
    ds.Modality = "DX"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = _da(started)
    ds.SeriesTime = _tm(started)
    ds.BodyPartExamined = part
    if item is not None:
        if item.sps_description:
            ds.SeriesDescription = item.sps_description
            ds.PerformedProcedureStepDescription = item.sps_description
        orders = [order for order in requested(item) if scheduled(order)]
        if orders:  # an unscheduled patient (typed in at the console) was not requested: no item
            ds.RequestAttributesSequence = Sequence([_request_attributes(order) for order in orders])
        protocols = list(dict.fromkeys(c for order in requested(item) for c in order.protocol_codes))
        if protocols:
            ds.PerformedProtocolCodeSequence = Sequence(
                [code_item(c.value, c.scheme, c.meaning) for c in protocols])
    if pps_id:
        ds.PerformedProcedureStepID = pps_id
    if pps_start is not None:
        ds.PerformedProcedureStepStartDate = _da(pps_start)
        ds.PerformedProcedureStepStartTime = _tm(pps_start)
    if mpps_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = MPPS_SOP_CLASS
        ref.ReferencedSOPInstanceUID = mpps_uid
        ds.ReferencedPerformedProcedureStepSequence = Sequence([ref])


def requested(item: WorklistItem | None) -> list[WorklistItem]:
    """Every requested procedure an exam performs: the order, and those grouped with it."""
    return [] if item is None else [item, *item.grouped]


def scheduled(order: WorklistItem) -> bool:
    """Whether the order came from a worklist: a patient entered at the console has neither a
    Requested Procedure ID nor a Scheduled Procedure Step ID, and objects then name no request
    (the IDs are Type 1C there, required once a procedure was scheduled, so never empty)."""
    return bool(order.requested_procedure_id or order.sps_id)


def group_accession(item: WorklistItem | None) -> str:
    """Accession Number of the images: the order's, or empty in a group case whose requested
    procedures have different ones (IHE SWF; each is in Request Attributes Sequence)."""
    numbers = {order.accession_number for order in requested(item)}
    return numbers.pop() if len(numbers) == 1 else ""


def _request_attributes(item: WorklistItem) -> Dataset:
    req = Dataset()
    req.RequestedProcedureID = item.requested_procedure_id
    if item.accession_number:
        req.AccessionNumber = item.accession_number
    if item.study_instance_uid:
        req.StudyInstanceUID = item.study_instance_uid
    if item.requested_procedure_description:
        req.RequestedProcedureDescription = item.requested_procedure_description
    if item.procedure_codes:
        req.RequestedProcedureCodeSequence = Sequence([code_item(c.value, c.scheme, c.meaning)
                                                       for c in item.procedure_codes])
    req.ScheduledProcedureStepID = item.sps_id
    if item.sps_description:
        req.ScheduledProcedureStepDescription = item.sps_description
    if item.protocol_codes:
        req.ScheduledProtocolCodeSequence = Sequence(
            [code_item(c.value, c.scheme, c.meaning) for c in item.protocol_codes])
    return req


def _equipment(ds: Dataset, site: SiteConfig, detector: DetectorInfo) -> None:
    ds.Manufacturer = site.manufacturer
    ds.ManufacturerModelName = site.model_name
    if site.institution_name:
        ds.InstitutionName = site.institution_name
    if site.department_name:
        ds.InstitutionalDepartmentName = site.department_name
    ds.StationName = site.station_name
    if site.device_serial:  # the system's; the detector's own serial is Detector ID
        ds.DeviceSerialNumber = site.device_serial
    ds.SoftwareVersions = [f"dxgate {_version()}", f"detector firmware {detector.firmware}"]


def _image(ds: Dataset, frame: CorrectedFrame, exposure: Exposure, instance_number: int,
           view_position: str, patient_orientation: tuple[str, str] | None, now: datetime) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.InstanceNumber = instance_number
    view = view_position.strip().upper()
    ds.PatientOrientation = list(patient_orientation or _PATIENT_ORIENTATION.get(view, ("L", "F")))
    ds.ContentDate = _da(now)
    ds.ContentTime = _tm(now)
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = _da(exposure.started_at)
    ds.AcquisitionTime = _tm(exposure.started_at)
    ds.AcquisitionDateTime = _dt(exposure.started_at)
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1  # higher value = more X-ray intensity
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE"
    steps = ", ".join(frame.history)
    ds.AcquisitionDeviceProcessingDescription = _clip(steps or "none", 64)
    ds.DerivationDescription = _clip(
        f"calibration {frame.calibration_id} of {frame.calibrated_at.isoformat()}; "
        f"frame {frame.meta.frame_number}; mode {frame.meta.mode}; steps: {steps or 'none'}", 1024)


# Conventional display orientation (row direction, column direction) per view: frontal views
# as if facing the patient, laterals as seen from the side against the detector. The detector
# is assumed mounted so that its readout gives that display; callers that know better pass
# patient_orientation. An unknown view ("") is taken as frontal.
_PATIENT_ORIENTATION: dict[str, tuple[str, str]] = {
    "PA": ("L", "F"), "AP": ("L", "F"), "": ("L", "F"), "LL": ("P", "F"), "RL": ("A", "F"),
    "RLD": ("L", "F"), "LLD": ("L", "F"), "RLO": ("L", "F"), "LLO": ("L", "F"),  # decubitus/oblique: frontal
}


def _pixels(ds: Dataset, frame: CorrectedFrame) -> None:
    px = frame.pixels
    if px.dtype != np.uint16 or px.ndim != 2:
        raise DicomBuildError(f"frame {frame.meta.frame_number}: pixels are {px.dtype}{px.shape}, need 2-D uint16")
    try:
        ds.set_pixel_data(px, "MONOCHROME1", frame.meta.bits_stored, generate_instance_uid=False)
    except ValueError as exc:
        raise DicomBuildError(f"frame {frame.meta.frame_number}: {exc}") from None


def _processed(ds: Dataset, frame: CorrectedFrame, p: Presentation) -> None:
    """Processed pixels: log of dose (still more X-rays = higher value), the steps named."""
    px = p.pixels
    if px.dtype != np.uint16 or px.shape != frame.pixels.shape:
        raise DicomBuildError(f"frame {frame.meta.frame_number}: processed pixels are {px.dtype}{px.shape}, "
                              f"need uint16{frame.pixels.shape}")
    try:
        ds.set_pixel_data(px, "MONOCHROME1", p.bits_stored, generate_instance_uid=False)
    except ValueError as exc:
        raise DicomBuildError(f"frame {frame.meta.frame_number}: {exc}") from None
    ds.PixelIntensityRelationship = "LOG"
    ds.AcquisitionDeviceProcessingDescription = _clip(f"{ds.AcquisitionDeviceProcessingDescription}; "
                                                      f"{p.description}", 64)
    ds.DerivationDescription = _clip(f"{ds.DerivationDescription}; presentation: {p.description}", 1024)


def _anatomy(ds: Dataset, code: str, meaning: str, laterality: str, view_position: str,
             coded_view: View | None) -> None:
    ds.ImageLaterality = laterality
    ds.AnatomicRegionSequence = Sequence([code_item(code, "SCT", meaning)])
    # DX Positioning module: present because View Position is known.
    ds.ViewPosition = view_position.strip().upper()
    if coded_view is not None:  # present only with its one item
        ds.ViewCodeSequence = Sequence([code_item(coded_view.code, "SCT", coded_view.meaning)])
    ds.PositionerType = ""  # Type 2: a plain wall stand / table has no defined term here


def _detector(ds: Dataset, frame: CorrectedFrame, detector: DetectorInfo, detector_type: str,
              spacing: tuple[float, float]) -> None:
    ds.DetectorType = detector_type
    ds.DetectorConfiguration = "AREA"
    ds.DetectorID = detector.serial
    ds.DetectorManufacturerName = detector.vendor
    ds.DetectorManufacturerModelName = detector.model
    ds.DetectorMode = frame.meta.mode
    if math.isfinite(frame.meta.temperature_c) and DETECTOR_TEMPERATURE_C[0] <= frame.meta.temperature_c <= \
            DETECTOR_TEMPERATURE_C[1]:  # a device reading outside this is not a temperature: left out
        ds.DetectorTemperature = _ds(frame.meta.temperature_c)
    ds.DateOfLastDetectorCalibration = _da(frame.calibrated_at)
    ds.TimeOfLastDetectorCalibration = _tm(frame.calibrated_at)
    ds.ImagerPixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]


_last_field: tuple[weakref.ref[CorrectedFrame], CollimatedField | None] | None = None


def collimated_field(frame: CorrectedFrame) -> CollimatedField | None:
    """The frame's collimated field, found once for both objects of an exposure."""
    global _last_field
    last = _last_field
    if last is not None and last[0]() is frame:
        return last[1]
    found = detect_field(frame.pixels, NO_BEAM_UGY * frame.counts_per_ugy)
    _last_field = (weakref.ref(frame), found)
    return found


def _collimator(ds: Dataset, frame: CorrectedFrame) -> None:
    """X-Ray Collimator module (PS3.3 C.8.7.3): the field found in the linear frame (the panel
    does not report the blades); left out when the frame shows no beam."""
    found = collimated_field(frame)
    if found is None:
        return
    left, right, upper, lower = found.dicom_edges()
    ds.CollimatorShape = "RECTANGULAR"
    ds.CollimatorLeftVerticalEdge = left
    ds.CollimatorRightVerticalEdge = right
    ds.CollimatorUpperHorizontalEdge = upper
    ds.CollimatorLowerHorizontalEdge = lower


def _dose(ds: Dataset, exposure: Exposure, ei: ExposureIndex | None) -> None:
    """The X-Ray Acquisition Dose attributes the generator confirmed. Each is Type 3: a value
    the readback lost or flagged as absurd is left out (never a guess), and the image says why."""
    act = exposure.actual
    if exposure.problems:
        ds.ImageComments = _clip("Exposure data incomplete: " + "; ".join(exposure.problems), 10240)
    if act is not None and act.kvp is not None:
        ds.KVP = _ds(act.kvp)
    if act is not None and act.mas is not None:
        ds.Exposure = round(act.mas)
        ds.ExposureInuAs = round(act.mas * 1000.0)
    if act is not None and act.exposure_time_ms is not None:
        ds.ExposureTime = round(act.exposure_time_ms)
        ds.ExposureTimeInuS = _ds(act.exposure_time_ms * 1000.0)
        if act.mas is not None and act.exposure_time_ms > 0:
            ds.XRayTubeCurrent = round(act.mas / (act.exposure_time_ms / 1000.0))
    if act is not None and act.dap_dgy_cm2 is not None:
        ds.ImageAndFluoroscopyAreaDoseProduct = _ds(act.dap_dgy_cm2)
    if ei is None:  # Type 3: an image whose EI could not be computed is still kept
        return
    ds.ExposureIndex = _ds(ei.ei)
    ds.TargetExposureIndex = _ds(ei.target_ei)
    ds.DeviationIndex = _ds(ei.deviation_index)


def _voi(ds: Dataset, px: np.ndarray) -> None:
    rows, cols = px.shape
    centre = px[rows // 4: rows - rows // 4 or rows, cols // 4: cols - cols // 4 or cols]
    lo, hi = percentiles_u16(centre, WINDOW_PERCENTILES) if centre.dtype == np.uint16 else \
        np.percentile(centre, WINDOW_PERCENTILES)
    width = max(float(hi - lo), 1.0) + 1.0
    ds.WindowCenter = _ds((float(lo) + float(hi)) / 2.0 + 0.5)
    ds.WindowWidth = _ds(width)
    ds.WindowCenterWidthExplanation = "CENTRAL 1-99%"
    ds.VOILUTFunction = "LINEAR"


def _local(t: datetime) -> datetime:
    """An aware time in the edge box's own (the hospital's) zone: viewers show DA/TM as written,
    most ignoring Timezone Offset From UTC, so UTC times would read hours off."""
    return t.astimezone() if t.tzinfo is not None else t


def _da(d: date | datetime) -> str:
    return (_local(d) if isinstance(d, datetime) else d).strftime("%Y%m%d")


def _tm(t: datetime) -> str:
    return _local(t).strftime("%H%M%S.%f")


def _dt(t: datetime) -> str:
    s = _local(t).strftime("%Y%m%d%H%M%S.%f")
    return s + _tz_offset(_local(t)) if t.tzinfo is not None else s


def _tz_offset(t: datetime) -> str:
    off = t.utcoffset() or timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def _ds(x: float) -> str:
    if not math.isfinite(x):
        raise DicomBuildError(f"value {x} cannot be written as a DICOM decimal string")
    return format_number_as_ds(float(x))


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


def _version() -> str:
    try:
        return metadata.version("dxgate")
    except metadata.PackageNotFoundError:
        return "unknown"
