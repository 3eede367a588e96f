"""Key Object Selection Document "Rejected for Quality Reasons" (PS3.3 A.35.4; PS3.16 TID 2010,
CID 7011 code (113001, DCM)), as IHE Mammography Acquisition Workflow and IOCM use it: the
only way to withdraw an image that has already reached an archive as clinical.

Patient and study attributes are copied from the rejected image itself, so the note files
under the same patient and study at the archive; it goes in its own series (Modality KO).
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from gateway.codes import code_item
from gateway.config import SiteConfig
from gateway.dicom.dx import CHARSET, DicomBuildError, _sop_common
from gateway.uids import is_valid_uid

KEY_OBJECT_SELECTION = UID("1.2.840.10008.5.1.4.1.1.88.59")
REJECTED_FOR_QUALITY = ("113001", "DCM", "Rejected for Quality Reasons")  # CID 7011

# Patient and General Study module attributes, copied as the image has them.
_COPIED = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
           "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
           "StudyDescription", "ProcedureCodeSequence", "ReferencedStudySequence")


def build_rejection_kos(rejected: Seq[Dataset], *, site: SiteConfig, series_uid: str, sop_instance_uid: str,
                        now: datetime, series_number: int = 999, instance_number: int = 1) -> Dataset:
    """The KOS flagging `rejected` (headers of images of ONE study) Rejected for Quality Reasons."""
    if not rejected:
        raise DicomBuildError("a rejection note needs at least one rejected image")
    first = rejected[0]
    study = str(first.StudyInstanceUID)
    if any(str(d.StudyInstanceUID) != study for d in rejected):
        raise DicomBuildError("one rejection note references images of one study only")
    for uid in (series_uid, sop_instance_uid):
        if not is_valid_uid(uid):
            raise DicomBuildError(f"{uid!r} is not a valid UID")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SpecificCharacterSet = CHARSET
    _sop_common(ds, KEY_OBJECT_SELECTION, sop_instance_uid, now)
    for kw in _COPIED:
        if kw in first:
            setattr(ds, kw, first[kw].value)
    # Key Object Document Series, General Equipment
    ds.Modality = "KO"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.SeriesDescription = "Rejected for Quality Reasons"
    ds.Manufacturer = site.manufacturer
    ds.ManufacturerModelName = site.model_name
    ds.StationName = site.station_name
    # Key Object Document
    ds.InstanceNumber = instance_number
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    series: dict[str, list[Dataset]] = {}
    for d in rejected:
        series.setdefault(str(d.SeriesInstanceUID), []).append(_sop_ref(d))
    evidence = Dataset()
    evidence.StudyInstanceUID = study
    evidence.ReferencedSeriesSequence = Sequence([_series_ref(uid, refs) for uid, refs in series.items()])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    # SR Document Content: a CONTAINER titled by the CID 7011 code, one IMAGE item per rejected image
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([code_item(*REJECTED_FOR_QUALITY)])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = Sequence([template])
    items = []
    for d in rejected:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE"
        item.ReferencedSOPSequence = Sequence([_sop_ref(d)])
        items.append(item)
    ds.ContentSequence = Sequence(items)
    return ds


def _sop_ref(d: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = d.SOPClassUID
    ref.ReferencedSOPInstanceUID = d.SOPInstanceUID
    return ref


def _series_ref(series_uid: str, refs: list[Dataset]) -> Dataset:
    s = Dataset()
    s.SeriesInstanceUID = series_uid
    s.ReferencedSOPSequence = Sequence(refs)
    return s
