"""Build the X-Ray Radiation Dose SR of one study (PS3.3 A.35.8; PS3.16 TID 10001 Projection X-Ray
Radiation Dose, with TID 10002/10007 accumulated dose and one TID 10003 irradiation event per
exposure, rejected ones included: their dose was given).

Patient, study and equipment are written by the DX builder's own helpers, so the report agrees
with the images attribute for attribute. Every UID (the report's, its series', each event's) is
assigned once by the caller, so a rebuilt report is the same object. Only the values the generator
confirmed are written: a missing readback leaves its content item out (never a guess), and a
Dose Area Product Total that cannot be summed is written as "Value unknown" (it is mandatory).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import UID, ExplicitVRLittleEndian

from gateway.codes import code_item
from gateway.config import SiteConfig
from gateway.dicom.anatomy import AnatomyError
from gateway.dicom.anatomy import body_part as lookup_body_part
from gateway.dicom.anatomy import view as lookup_view
from gateway.dicom.dx import (
    CHARSET,
    MPPS_SOP_CLASS,
    DicomBuildError,
    _clip,
    _ds,
    _dt,
    _equipment,
    _patient,
    _sop_common,
    _study,
    requested,
    scheduled,
)
from gateway.types import DetectorInfo, Exposure, WorklistItem
from gateway.uids import UUID_ROOT, is_valid_uid

LOGGER = logging.getLogger(__name__)

XRAY_RADIATION_DOSE_SR = UID("1.2.840.10008.5.1.4.1.1.88.67")
DGY_CM2_TO_GY_M2 = 1e-5  # 1 dGy = 0.1 Gy, 1 cm² = 1e-4 m²

# UCUM units of the content items (PS3.16 TID 10003B, TID 10007).
_GY_M2 = Code("Gy.m2", "UCUM", "Gy.m2")
_KV = Code("kV", "UCUM", "kV")
_MA = Code("mA", "UCUM", "mA")
_MS = Code("ms", "UCUM", "ms")
_UAS = Code("uA.s", "UCUM", "uAs")
_FRAMES = Code("{frames}", "UCUM", "frames")
_LATERALITY = {"R": codes.CID244.Right, "L": codes.CID244.Left, "B": codes.CID244.Bilateral}


@dataclass(frozen=True)
class IrradiationEvent:
    """One exposure as the dose report records it (TID 10003)."""

    event_uid: str  # Irradiation Event UID, assigned when the tube fired
    exposure: Exposure
    body_part: str  # Body Part Examined term (gateway.anatomy)
    view_position: str = ""
    laterality: str | None = None
    protocol: str = ""  # the protocol table's name, when the view was chosen from it
    image_uid: str = ""  # the SOP Instance UID assigned to its image
    rejected_reason: str | None = None  # None: not rejected; else the technologist's reason


def device_observer_uid(site: SiteConfig, detector: DetectorInfo) -> str:
    """A UID for this X-ray system as device observer (TID 1004), the same on every report:
    derived (PS3.5 B.2, UUID form) from the identity the images carry."""
    serial = site.device_serial or detector.serial
    name = f"dxgate-device:{site.manufacturer}:{site.model_name}:{serial}:{site.station_name}"
    return f"{UUID_ROOT}.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def build_rdsr(
    events: Seq[IrradiationEvent],
    item: WorklistItem | None,
    *,
    site: SiteConfig,
    detector: DetectorInfo,
    study_uid: str,
    series_uid: str,
    sop_instance_uid: str,
    now: datetime,
    started: datetime,
    series_number: int = 999,
    images: Seq[tuple[str, str, str]] = (),
    mpps_sop_instance_uid: str = "",
    operator: str = "",
) -> Dataset:
    """An X-Ray Radiation Dose SR dataset (with file meta) with one irradiation event per entry
    of `events` (at least one). `started` dates the study as the images do (the procedure step's
    first exposure). `images` (series UID, SOP class UID, SOP instance UID) are the instances made
    for the request, listed as its evidence; `mpps_sop_instance_uid` references the MPPS."""
    if not events:
        raise DicomBuildError("a dose report needs at least one irradiation event")
    for name, uid in (("study", study_uid), ("series", series_uid), ("SOP instance", sop_instance_uid),
                      *(("irradiation event", e.event_uid) for e in events)):
        if not is_valid_uid(uid):
            raise DicomBuildError(f"{name} UID {uid!r} is not a valid DICOM UID")
    if item is not None and item.study_instance_uid and item.study_instance_uid != study_uid:
        raise DicomBuildError(f"study UID {study_uid} differs from the worklist's {item.study_instance_uid}")

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = CHARSET
    _sop_common(ds, XRAY_RADIATION_DOSE_SR, sop_instance_uid, now)
    _patient(ds, item)
    _study(ds, item, study_uid, started)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "Radiation Dose Report"
    ref_pps = Dataset()
    if mpps_sop_instance_uid:
        ref_pps.ReferencedSOPClassUID = MPPS_SOP_CLASS
        ref_pps.ReferencedSOPInstanceUID = mpps_sop_instance_uid
    ds.ReferencedPerformedProcedureStepSequence = Sequence([ref_pps] if mpps_sop_instance_uid else [])
    _equipment(ds, site, detector)
    if "DeviceSerialNumber" not in ds:  # Type 1 in Enhanced General Equipment: the detector's then
        ds.DeviceSerialNumber = detector.serial
    _document_general(ds, item, study_uid, now, images)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = _codes(codes.DCM.XRayRadiationDoseReport)
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "10001"
    ds.ContentTemplateSequence = Sequence([template])
    ds.ContentSequence = Sequence(_projection_xray(events, site, detector, study_uid, operator))
    return ds


def _request(item: WorklistItem, study_uid: str) -> Dataset:
    req = Dataset()
    req.StudyInstanceUID = item.study_instance_uid or study_uid
    ref = Dataset()
    if item.referenced_study_sop_instance_uid:
        ref.ReferencedSOPClassUID = item.referenced_study_sop_class_uid or "1.2.840.10008.3.1.2.3.1"
        ref.ReferencedSOPInstanceUID = item.referenced_study_sop_instance_uid
    req.ReferencedStudySequence = Sequence([ref] if item.referenced_study_sop_instance_uid else [])
    req.AccessionNumber = item.accession_number
    req.PlacerOrderNumberImagingServiceRequest = ""
    req.FillerOrderNumberImagingServiceRequest = ""
    req.RequestedProcedureID = item.requested_procedure_id
    req.RequestedProcedureDescription = item.requested_procedure_description
    req.RequestedProcedureCodeSequence = Sequence(
        [_code_item(Code(c.value, c.scheme, c.meaning)) for c in item.procedure_codes])
    return req


def _document_general(ds: Dataset, item: WorklistItem | None, study_uid: str, now: datetime,
                      images: Seq[tuple[str, str, str]]) -> None:
    ds.InstanceNumber = 1
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    orders = requested(item)  # the group case: one request per requested procedure
    ds.PerformedProcedureCodeSequence = Sequence(
        [_code_item(Code(c.value, c.scheme, c.meaning))
         for c in dict.fromkeys(c for order in orders for c in order.procedure_codes)])
    if item is None:
        return
    if requests := [order for order in orders if scheduled(order)]:  # not for a patient typed in at the console
        ds.ReferencedRequestSequence = Sequence([_request(order, study_uid) for order in requests])
    if images:  # the instances made for the request (Hierarchical SOP Instance Reference Macro)
        by_series: dict[str, list[Dataset]] = {}
        for series, sop_class, sop_uid in images:
            r = Dataset()
            r.ReferencedSOPClassUID = sop_class
            r.ReferencedSOPInstanceUID = sop_uid
            by_series.setdefault(series, []).append(r)
        study = Dataset()
        study.StudyInstanceUID = study_uid
        series_items = []
        for series, refs in by_series.items():
            s = Dataset()
            s.SeriesInstanceUID = series
            s.ReferencedSOPSequence = Sequence(refs)
            series_items.append(s)
        study.ReferencedSeriesSequence = Sequence(series_items)
        ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])


def _projection_xray(events: Seq[IrradiationEvent], site: SiteConfig, detector: DetectorInfo,
                     study_uid: str, operator: str = "") -> list[Dataset]:
    """The root's children (TID 10001)."""
    procedure = _item("HAS CONCEPT MOD", "CODE", codes.DCM.ProcedureReported, codes.DCM.ProjectionXRay)
    procedure.ContentSequence = Sequence([_item("HAS CONCEPT MOD", "CODE", codes.SCT.HasIntent,
                                                codes.CID3629.DiagnosticIntent)])
    scope = _item("HAS OBS CONTEXT", "CODE", codes.DCM.ScopeOfAccumulation, codes.CID10000.Study)
    scope.ContentSequence = Sequence([_item("HAS PROPERTIES", "UIDREF", codes.DCM.StudyInstanceUID, study_uid)])
    return [
        procedure,
        _item("CONTAINS", "CODE", codes.DCM.AcquisitionDeviceType,
              codes.CID10032.IntegratedProjectionRadiographySystem),
        *_observer(site, detector),
        scope,
        _accumulated(events),
        *(_event(e, operator) for e in events),
        _item("CONTAINS", "CODE", codes.DCM.SourceOfDoseInformation, codes.CID10021.AutomatedDataCollection),
    ]


def _observer(site: SiteConfig, detector: DetectorInfo) -> list[Dataset]:
    """TID 1002 with TID 1004: the system itself, identified as in the images."""
    items = [_item("HAS OBS CONTEXT", "CODE", codes.DCM.ObserverType, codes.DCM.Device),
             _item("HAS OBS CONTEXT", "UIDREF", codes.DCM.DeviceObserverUID, device_observer_uid(site, detector))]
    for concept, value in ((codes.DCM.DeviceObserverName, site.station_name),
                           (codes.DCM.DeviceObserverManufacturer, site.manufacturer),
                           (codes.DCM.DeviceObserverModelName, site.model_name),
                           (codes.DCM.DeviceObserverSerialNumber, site.device_serial or detector.serial)):
        if value:
            items.append(_item("HAS OBS CONTEXT", "TEXT", concept, value))
    return items


def _accumulated(events: Seq[IrradiationEvent]) -> Dataset:
    """TID 10002 for the single plane, with TID 10007 (integrated projection radiography)."""
    daps = [e.exposure.actual.dap_dgy_cm2 if e.exposure.actual is not None else None for e in events]
    total = (_num(codes.DCM.DoseAreaProductTotal, sum(d for d in daps if d is not None) * DGY_CM2_TO_GY_M2, _GY_M2)
             if all(d is not None for d in daps) else _unknown(codes.DCM.DoseAreaProductTotal, _GY_M2))
    container = _container(codes.DCM.AccumulatedXRayDoseData)
    container.ContentSequence = Sequence([
        _item("HAS CONCEPT MOD", "CODE", codes.DCM.AcquisitionPlane, codes.CID10003.SinglePlane),
        total,
        _num(codes.DCM.TotalNumberOfRadiographicFrames, len(events), _FRAMES),
    ])
    return container


def _event(e: IrradiationEvent, operator: str = "") -> Dataset:
    """TID 10003 with TID 10003B: one exposure, only what the generator confirmed; the operator
    as its TID 1020 Person Participant, Irradiation Administering (the SR IOD has no Operators'
    Name attribute)."""
    try:
        part = lookup_body_part(e.body_part)
        coded_view = lookup_view(e.view_position) if e.view_position else None
    except AnatomyError as exc:
        raise DicomBuildError(str(exc)) from None
    target = _item("CONTAINS", "CODE", codes.DCM.TargetRegion, Code(part.code, "SCT", part.meaning))
    lat = (e.laterality or "").upper()
    if part.paired and lat in _LATERALITY:
        target.ContentSequence = Sequence([_item("HAS CONCEPT MOD", "CODE", codes.SCT.Laterality, _LATERALITY[lat])])
    items = [
        _item("HAS CONCEPT MOD", "CODE", codes.DCM.AcquisitionPlane, codes.CID10003.SinglePlane),
        _item("CONTAINS", "UIDREF", codes.DCM.IrradiationEventUID, e.event_uid),
        _item("CONTAINS", "DATETIME", codes.DCM.DatetimeStarted, _sr_dt(e.exposure.started_at)),
        _item("CONTAINS", "CODE", codes.DCM.IrradiationEventType, codes.CID10002.StationaryAcquisition),
    ]
    if operator:
        person = _item("CONTAINS", "PNAME", codes.DCM.PersonName, operator)
        person.ContentSequence = Sequence([_item("HAS PROPERTIES", "CODE", codes.DCM.PersonRoleInProcedure,
                                                 codes.DCM.IrradiationAdministering)])
        items.append(person)
    if e.protocol:
        items.append(_item("CONTAINS", "TEXT", codes.DCM.AcquisitionProtocol, _clip(e.protocol, 1024)))
    items.append(target)
    if coded_view is not None:
        items.append(_item("CONTAINS", "CODE", codes.DCM.ImageView, Code(coded_view.code, "SCT", coded_view.meaning)))
    act = e.exposure.actual
    if act is not None:
        if act.dap_dgy_cm2 is not None:
            items.append(_num(codes.DCM.DoseAreaProduct, act.dap_dgy_cm2 * DGY_CM2_TO_GY_M2, _GY_M2))
        if act.kvp is not None:
            items.append(_num(codes.DCM.KVP, act.kvp, _KV))
        current = act.tube_current_ma
        if current is None and act.mas is not None and act.exposure_time_ms:  # from the two confirmed values
            current = act.mas / (act.exposure_time_ms / 1000.0)
        if current is not None:
            items.append(_num(codes.DCM.XRayTubeCurrent, current, _MA))
        if act.exposure_time_ms is not None:
            items.append(_num(codes.DCM.ExposureTime, act.exposure_time_ms, _MS))
        if act.mas is not None:
            items.append(_num(codes.DCM.Exposure, act.mas * 1000.0, _UAS))
    notes = []
    if e.rejected_reason is not None:
        notes.append(f"Image rejected by the technologist: {e.rejected_reason}" if e.rejected_reason
                     else "Image rejected by the technologist")
    if act is None or e.exposure.problems:
        notes.append("Exposure data incomplete: " + ("; ".join(e.exposure.problems) or "no generator readback"))
    if notes:
        items.append(_item("CONTAINS", "TEXT", codes.DCM.Comment, _clip(". ".join(notes), 1024)))
    container = _container(codes.DCM.IrradiationEventXRayData)
    container.ContentSequence = Sequence(items)
    return container


def _sr_dt(t: datetime) -> str:
    """DT as the images write it, but a zero offset left off: it then reads as Timezone Offset
    From UTC (+0000), and DCMTK 3.6.7's SR reader rejects an explicit "+0000" in content items."""
    s = _dt(t)
    return s.removesuffix("+0000")


# --- content items -------------------------------------------------------------------------------

def _code_item(code: Code) -> Dataset:
    return code_item(code.value, code.scheme_designator, code.meaning)


def _codes(code: Code) -> Sequence:
    return Sequence([_code_item(code)])


def _container(concept: Code) -> Dataset:
    c = Dataset()
    c.RelationshipType = "CONTAINS"
    c.ValueType = "CONTAINER"
    c.ConceptNameCodeSequence = _codes(concept)
    c.ContinuityOfContent = "SEPARATE"
    return c


def _item(relationship: str, value_type: str, concept: Code, value: Code | str) -> Dataset:
    c = Dataset()
    c.RelationshipType = relationship
    c.ValueType = value_type
    c.ConceptNameCodeSequence = _codes(concept)
    if isinstance(value, Code):
        c.ConceptCodeSequence = _codes(value)
    elif value_type == "UIDREF":
        c.UID = value
    elif value_type == "DATETIME":
        c.DateTime = value
    elif value_type == "PNAME":
        c.PersonName = value
    else:
        c.TextValue = value
    return c


def _num(concept: Code, value: float, units: Code) -> Dataset:
    c = _item("CONTAINS", "NUM", concept, "")
    del c.TextValue
    mv = Dataset()
    mv.NumericValue = _ds(value)
    mv.MeasurementUnitsCodeSequence = _codes(units)
    c.MeasuredValueSequence = Sequence([mv])
    return c


def _unknown(concept: Code, units: Code) -> Dataset:
    """A mandatory NUM whose value is not known: no measured value, qualified (CID 42)."""
    c = _item("CONTAINS", "NUM", concept, "")
    del c.TextValue
    c.MeasuredValueSequence = Sequence()
    c.NumericValueQualifierCodeSequence = _codes(codes.CID42.ValueUnknown)
    LOGGER.debug("%s: not every exposure reported it; written as unknown (%s)", concept.meaning, units.value)
    return c
