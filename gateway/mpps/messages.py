"""The two MPPS messages dxgate sends per procedure step (PS3.4 F.7.2, IHE RAD-6 / RAD-7):
N-CREATE with the step IN PROGRESS at its first exposure, and one final N-SET, COMPLETED with
every image and the dose of every exposure (rejected ones too: their dose was given), or
DISCONTINUED with a reason code of CID 9300. Attributes follow Table F.7.2-1: what N-CREATE
must carry and what N-SET may change are kept apart here.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.valuerep import format_number_as_ds

from gateway.codes import code_item
from gateway.types import Exposure, WorklistItem

CHARSET = "ISO_IR 192"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"

# CID 9300 "Procedure Discontinuation Reasons", by the key the console sends.
DISCONTINUATION_REASONS = {
    "unspecified": codes.DCM.DiscontinuedForUnspecifiedReason,
    "patient-refused": codes.DCM.PatientRefusedToContinueProcedure,
    "patient-condition": codes.DCM.PatientConditionPreventedContinuing,
    "equipment-failure": codes.DCM.EquipmentFailure,
    "wrong-worklist-entry": codes.DCM.IncorrectWorklistEntrySelected,
    "wrong-procedure": codes.DCM.IncorrectProcedureOrdered,
    "wrong-side": codes.DCM.IncorrectSideOrdered,
    "duplicate-order": codes.DCM.DuplicateOrder,
    "doctor-cancelled": codes.DCM.DoctorCanceledProcedure,
}


@dataclass(frozen=True)
class Performed:
    """The procedure step: who, what and when (fixed at its first exposure)."""

    item: WorklistItem | None
    study_uid: str
    pps_id: str
    start: datetime
    station_ae: str
    station_name: str
    operator: str = ""
    description: str = ""


@dataclass(frozen=True)
class PerformedImage:
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    protocol_name: str = ""
    rejected: bool = False


def in_progress(step: Performed) -> Dataset:
    """The N-CREATE attribute list (the SOP Instance UID travels as Affected SOP Instance UID)."""
    ds = Dataset()
    ds.SpecificCharacterSet = CHARSET
    item = step.item
    # one item per scheduled step performed: the order, and in the group case those grouped with it
    orders: list[WorklistItem | None] = [item, *item.grouped] if item is not None else [None]
    ds.ScheduledStepAttributesSequence = Sequence([_scheduled(order, step.study_uid) for order in orders])
    ds.PatientName = item.patient_name if item else ""
    ds.PatientID = item.patient_id if item else ""
    ds.PatientBirthDate = item.patient_birth_date.strftime("%Y%m%d") if item and item.patient_birth_date else ""
    ds.PatientSex = item.patient_sex if item and item.patient_sex in ("M", "F", "O") else ""
    ds.ReferencedPatientSequence = Sequence()
    ds.PerformedProcedureStepID = step.pps_id
    ds.PerformedStationAETitle = step.station_ae
    ds.PerformedStationName = step.station_name
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = _da(step.start)
    ds.PerformedProcedureStepStartTime = _tm(step.start)
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = step.description or (item.sps_description if item else "")
    ds.PerformedProcedureTypeDescription = item.requested_procedure_description if item else ""
    ds.ProcedureCodeSequence = Sequence([code_item(c.value, c.scheme, c.meaning) for c in dict.fromkeys(
        c for order in orders if order is not None for c in order.procedure_codes)])
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "DX"
    ds.StudyID = item.requested_procedure_id if item else ""
    ds.PerformedProtocolCodeSequence = Sequence([code_item(c.value, c.scheme, c.meaning) for c in dict.fromkeys(
        c for order in orders if order is not None for c in order.protocol_codes)])
    ds.PerformedSeriesSequence = Sequence()
    return ds


def _scheduled(item: WorklistItem | None, study_uid: str) -> Dataset:
    sched = Dataset()
    sched.StudyInstanceUID = item.study_instance_uid if item is not None and item.study_instance_uid else study_uid
    ref = Dataset()
    if item is not None and item.referenced_study_sop_instance_uid:
        ref.ReferencedSOPClassUID = item.referenced_study_sop_class_uid or DETACHED_STUDY_MANAGEMENT
        ref.ReferencedSOPInstanceUID = item.referenced_study_sop_instance_uid
        sched.ReferencedStudySequence = Sequence([ref])
    else:
        sched.ReferencedStudySequence = Sequence()
    sched.AccessionNumber = item.accession_number if item else ""
    sched.RequestedProcedureID = item.requested_procedure_id if item else ""
    sched.RequestedProcedureDescription = item.requested_procedure_description if item else ""
    sched.ScheduledProcedureStepID = item.sps_id if item else ""
    sched.ScheduledProcedureStepDescription = item.sps_description if item else ""
    sched.ScheduledProtocolCodeSequence = Sequence([code_item(c.value, c.scheme, c.meaning)
                                                    for c in (item.protocol_codes if item else ())])
    return sched


def completed(step: Performed, images: Seq[PerformedImage], end: datetime, *, exposures: Seq[Exposure],
              discontinued: str | None = None, non_images: Seq[PerformedImage] = ()) -> Dataset:
    """The final N-SET: COMPLETED, or DISCONTINUED with `discontinued` (a key of
    DISCONTINUATION_REASONS). Lists the images kept as clinical (rejected ones are not) and
    the dose of every exposure given (`exposures`: one per pulse, whether or not its image was made).
    `non_images` (the dose report, PS3.3 C.7.4 / IHE REM) go under Referenced Non-Image Composite
    SOP Instance Sequence, in their own series."""
    ds = Dataset()
    ds.SpecificCharacterSet = CHARSET
    ds.PerformedProcedureStepStatus = "COMPLETED" if discontinued is None else "DISCONTINUED"
    ds.PerformedProcedureStepEndDate = _da(end)
    ds.PerformedProcedureStepEndTime = _tm(end)
    if discontinued is not None:
        reason = DISCONTINUATION_REASONS.get(discontinued, DISCONTINUATION_REASONS["unspecified"])
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = Sequence(
            [code_item(reason.value, reason.scheme_designator, reason.meaning)])
    by_series: dict[str, list[tuple[PerformedImage, bool]]] = {}
    for img, is_image in [*((i, True) for i in images), *((n, False) for n in non_images)]:
        by_series.setdefault(img.series_uid, []).append((img, is_image))
    series = []
    for series_uid, entries in by_series.items():
        members = [m for m, _ in entries]
        s = Dataset()
        s.PerformingPhysicianName = ""
        s.OperatorsName = step.operator
        s.ProtocolName = next((m.protocol_name for m in members if m.protocol_name), "") or "dxgate"
        s.SeriesInstanceUID = series_uid
        s.SeriesDescription = step.description or (step.item.sps_description if step.item else "")
        s.RetrieveAETitle = ""
        s.ReferencedImageSequence = Sequence([_ref(m) for m, is_image in entries if is_image and not m.rejected])
        s.ReferencedNonImageCompositeSOPInstanceSequence = Sequence(
            [_ref(m) for m, is_image in entries if not is_image and not m.rejected])
        series.append(s)
    ds.PerformedSeriesSequence = Sequence(series)
    _dose(ds, exposures)
    return ds


def _ref(m: PerformedImage) -> Dataset:
    r = Dataset()
    r.ReferencedSOPClassUID = m.sop_class_uid
    r.ReferencedSOPInstanceUID = m.sop_instance_uid
    return r


def _dose(ds: Dataset, exposures: Seq[Exposure]) -> None:
    """Radiation Dose module (PS3.3 C.4.16): every exposure given, with what the generator
    confirmed (a value it did not confirm is left out, never guessed)."""
    ds.TotalNumberOfExposures = len(exposures)
    items = []
    total_dap = 0.0
    dap_known = bool(exposures)
    for e in exposures:
        act = e.actual
        item = Dataset()
        if act is not None and act.kvp is not None:
            item.KVP = format_number_as_ds(float(act.kvp))
        if act is not None and act.exposure_time_ms is not None:
            item.ExposureTime = round(act.exposure_time_ms)
            if act.mas is not None and act.exposure_time_ms > 0:
                item.XRayTubeCurrentInuA = format_number_as_ds(act.mas / (act.exposure_time_ms / 1000.0) * 1000.0)
        item.RadiationMode = "CONTINUOUS"
        items.append(item)
        if act is None or act.dap_dgy_cm2 is None:
            dap_known = False
        else:
            total_dap += act.dap_dgy_cm2
    ds.ExposureDoseSequence = Sequence(items)
    if dap_known:
        ds.ImageAndFluoroscopyAreaDoseProduct = format_number_as_ds(total_dap)


def _da(t: datetime) -> str:
    return (t.astimezone() if t.tzinfo else t).strftime("%Y%m%d")


def _tm(t: datetime) -> str:
    return (t.astimezone() if t.tzinfo else t).strftime("%H%M%S")
