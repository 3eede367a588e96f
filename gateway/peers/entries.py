"""Worklist entries for the demo and the tests: what a RIS would hold for one scheduled step.

The same dataset serves the embedded WorklistServer and, written with `worklist_file_bytes`,
Orthanc's worklist plugin (*.wl) and DCMTK wlmscpfs.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence as Seq
from datetime import date, datetime

from pydicom import dcmwrite
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from gateway.codes import code_item

LOGGER = logging.getLogger(__name__)

MWL_FIND = UID("1.2.840.10008.5.1.4.31")  # Modality Worklist Information Model - FIND


def make_worklist_entry(*, patient_name: str, patient_id: str, birth_date: date | str, sex: str, accession: str,
                        study_uid: str, requested_procedure_id: str, sps_id: str, sps_description: str,
                        station_ae: str, modality: str = "DX", start: datetime, charset: str | Seq[str] = "ISO_IR 192",
                        requested_procedure_description: str = "", referring_physician: str = "",
                        issuer_of_patient_id: str = "", protocol_codes: Seq[tuple[str, str, str]] = (),
                        referenced_study_uid: str = "", station_name: str = "",
                        procedure_codes: Seq[tuple[str, str, str]] = ()) -> Dataset:
    """One MWL entry (patient, order and one Scheduled Procedure Step) in `charset`.

    `station_ae` may be empty, as many RIS leave it; `station_name` is written when given.
    `birth_date` is a date or DICOM "YYYYMMDD" text; `protocol_codes` (Scheduled Protocol Code) and
    `procedure_codes` (Requested Procedure Code) are (value, scheme, meaning).
    `charset` is one character set ("ISO_IR 100", "ISO_IR 192") or ISO 2022 code extensions, as
    several values or one backslash-separated text ("ISO 2022 IR 6\\ISO 2022 IR 149": pydicom then
    writes the escape sequences). Every text must be encodable in it, else ValueError names the
    attribute.
    """
    terms = charset.split("\\") if isinstance(charset, str) else list(charset)
    codecs = []
    for n, term in enumerate(terms):
        codec = python_encoding.get(term) if term or (n == 0 and len(terms) > 1) else None
        if codec is None:
            raise ValueError(f"character set {charset!r} is not a DICOM character set pydicom knows")
        codecs.append(codec)
    ds = Dataset()
    ds.SpecificCharacterSet = terms if len(terms) > 1 else terms[0]
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    if issuer_of_patient_id:
        ds.IssuerOfPatientID = issuer_of_patient_id
    ds.PatientBirthDate = birth_date.strftime("%Y%m%d") if isinstance(birth_date, date) else birth_date
    ds.PatientSex = sex
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = referring_physician
    ds.StudyInstanceUID = study_uid
    ds.RequestedProcedureID = requested_procedure_id
    ds.RequestedProcedureDescription = requested_procedure_description or sps_description
    if procedure_codes:
        ds.RequestedProcedureCodeSequence = Sequence([code_item(*c) for c in procedure_codes])
    if referenced_study_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        ref.ReferencedSOPInstanceUID = referenced_study_uid
        ds.ReferencedStudySequence = Sequence([ref])
    sps = Dataset()
    sps.Modality = modality
    sps.ScheduledStationAETitle = station_ae
    if station_name:
        sps.ScheduledStationName = station_name
    sps.ScheduledProcedureStepStartDate = start.strftime("%Y%m%d")
    sps.ScheduledProcedureStepStartTime = start.strftime("%H%M%S")
    sps.ScheduledPerformingPhysicianName = ""
    sps.ScheduledProcedureStepID = sps_id
    sps.ScheduledProcedureStepDescription = sps_description
    codes = [code_item(*c) for c in protocol_codes]
    if codes:
        sps.ScheduledProtocolCodeSequence = Sequence(codes)
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    _check_encodable(ds, codecs, "\\".join(terms))
    return ds


def worklist_file_bytes(entry: Dataset) -> bytes:
    """A Part-10 file (with file meta) of a worklist entry, as Orthanc and wlmscpfs read them."""
    ds = entry.copy()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MWL_FIND
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _check_encodable(ds: Dataset, codecs: list[str], charset: str) -> None:
    """Every character of every text must be in one of the character sets (with code extensions,
    pydicom switches between them character by character)."""
    for elem in ds.iterall():
        if elem.VR in ("PN", "LO", "SH", "LT", "ST", "UT", "UC") and elem.value:
            if not all(_encodable(c, codecs) for c in str(elem.value)):
                raise ValueError(f"{elem.keyword} cannot be written in character set {charset}")


def _encodable(char: str, codecs: list[str]) -> bool:
    for codec in codecs:
        try:
            char.encode("ascii" if codec == "iso8859" else codec)  # pydicom's name for ISO_IR 6 (ASCII)
            return True
        except UnicodeEncodeError:
            pass
    return False
