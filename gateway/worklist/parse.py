"""Turn one MWL C-FIND answer (a pydicom Dataset) into WorklistItems.

Policy for malformed answers: an answer whose *required* content is missing or invalid
(no Scheduled Procedure Step Sequence, no Patient ID, no or invalid Study Instance UID, an
unparseable date or time, a string that cannot be decoded) makes `parse_answer` raise
WorklistError naming the attribute (by keyword), never its value (values are patient data). The client
skips that answer, logs the reason and counts it (QueryResult.skipped), and keeps the other
answers: one broken RIS entry must not hide the rest of the room's worklist. Optional
attributes that are absent become "" / None.

Strings are decoded by pydicom with the answer's Specific Character Set, so every string in
a WorklistItem is a Python str whatever the RIS encoding was.
"""

from __future__ import annotations

import logging
import threading
import warnings
from datetime import date, datetime, time
from functools import partial
from typing import Any

from pydicom.datadict import dictionary_VM, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import MAX_VALUE_LEN

from gateway.errors import WorklistError
from gateway.types import ProtocolCode, WorklistItem
from gateway.uids import is_valid_uid

LOGGER = logging.getLogger(__name__)

_TEXT_VRS = ("PN", "LO", "SH", "LT", "ST", "UT", "UC")
# catch_warnings() changes process-wide state: one decode at a time among the parsers
_DECODE_LOCK = threading.Lock()
PN_GROUP_MAX = 64  # characters per component group (PS3.5 6.2)


def parse_answer(ds: Dataset) -> list[WorklistItem]:
    """One WorklistItem per item of the Scheduled Procedure Step Sequence (normally one)."""
    _guess_missing_charset(ds)
    sps_seq = _get(ds, "ScheduledProcedureStepSequence")
    if not sps_seq:
        raise WorklistError("answer has no ScheduledProcedureStepSequence item")
    patient_id = _text(ds, "PatientID")
    if not patient_id:
        raise WorklistError("answer has no PatientID")
    study_uid = _text(ds, "StudyInstanceUID")
    if not study_uid:
        raise WorklistError("answer has no StudyInstanceUID")
    if not is_valid_uid(study_uid):
        raise WorklistError("answer's StudyInstanceUID is not a valid UID")
    item_of_step = partial(
        WorklistItem,
        patient_name=_text(ds, "PatientName"),
        patient_id=patient_id,
        patient_birth_date=_date(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex").upper(),
        accession_number=_text(ds, "AccessionNumber"),
        study_instance_uid=study_uid,
        requested_procedure_id=_text(ds, "RequestedProcedureID"),
        requested_procedure_description=_text(ds, "RequestedProcedureDescription"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        referenced_study_sop_instance_uid=_referenced_study(ds),
    )
    items = []
    for sps in sps_seq:
        start_date = _date(sps, "ScheduledProcedureStepStartDate")
        if start_date is None:
            raise WorklistError("answer has no ScheduledProcedureStepStartDate")
        start_time = _time(sps, "ScheduledProcedureStepStartTime")
        items.append(item_of_step(
            sps_id=_text(sps, "ScheduledProcedureStepID"),
            sps_description=_text(sps, "ScheduledProcedureStepDescription"),
            sps_start=datetime.combine(start_date, start_time or time()),
            modality=_text(sps, "Modality").upper(),
            scheduled_station_ae=_text(sps, "ScheduledStationAETitle"),
            protocol_codes=_codes(sps),
        ))
    return items


def _guess_missing_charset(ds: Dataset) -> None:
    """Re-read an answer that declares no character set but carries non-ASCII text.

    Such an answer breaks the standard (the default repertoire is ASCII), yet servers send it
    (DCMTK wlmscpfs by default drops the file's character set). pydicom then reads the bytes
    as Latin-1, which loses nothing: if all of them form valid UTF-8 they are re-read as UTF-8,
    otherwise Latin-1 stands. The guess is logged (without the text).
    """
    if "SpecificCharacterSet" in ds:
        return
    texts = [e for e in _text_elements(ds) if not str(e.value).isascii()]
    if not texts:
        return
    fixed = []
    try:
        for e in texts:
            values = list(e.value) if isinstance(e.value, MultiValue) else [e.value]
            fixed.append((e, [str(v).encode("latin-1").decode("utf-8") for v in values]))
    except UnicodeError:
        LOGGER.info("worklist answer without Specific Character Set has non-ASCII text: read as Latin-1")
        return
    for e, values in fixed:
        e.value = values if len(values) > 1 else values[0]
    ds.SpecificCharacterSet = "ISO_IR 192"
    LOGGER.info("worklist answer without Specific Character Set has non-ASCII text: read as UTF-8")


def _text_elements(ds: Dataset) -> list[Any]:
    out = []
    for e in ds:
        if e.VR == "SQ":
            for item in e.value or ():
                out.extend(_text_elements(item))
        elif e.VR in _TEXT_VRS and e.value:
            out.append(e)
    return out


def _get(ds: Dataset, keyword: str) -> Any:
    """An element's value, decoding it with the dataset's character set; None if absent.

    Text pydicom can only decode by guessing (an escape sequence it does not know, bytes
    outside the declared set) is refused, never guessed into an object: pydicom's warning
    about it becomes the item's error."""
    try:
        with _DECODE_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error")
            elem = ds[keyword] if keyword in ds else None
            value = None if elem is None else elem.value
    except (LookupError, ValueError, UserWarning) as exc:  # undecodable bytes, unknown charset or escape
        raise WorklistError(f"answer's {keyword} cannot be decoded with confidence (unknown escape sequence or "
                            f"bytes outside its character set: {type(exc).__name__})") from None
    return value


def _text(ds: Dataset, keyword: str) -> str:
    """The attribute's text, checked so that it can go into a valid object: one value where the
    attribute allows one, no control character (an ESC is an ISO 2022 escape left undecoded),
    within its VR's length. Errors name the attribute, never its value."""
    value = _get(ds, keyword)
    if value is None:
        return ""
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        vm, vr = dictionary_VM(keyword), dictionary_VR(keyword)
    except KeyError:
        vm, vr = "1", ""
    if len(values) > 1 and vm == "1":
        raise WorklistError(f"answer's {keyword} has {len(values)} values; it allows one")
    texts = [str(v).strip() for v in values]
    for text in texts:
        if "\ufffd" in text:  # pydicom substitutes what the declared character set cannot decode
            raise WorklistError(f"answer's {keyword} cannot be decoded with its Specific Character Set")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            hint = " (an ISO 2022 escape sequence left undecoded)" if "\x1b" in text else ""
            raise WorklistError(f"answer's {keyword} holds control characters{hint}")
        _check_length(keyword, vr, text)
    return "\\".join(texts)


def _check_length(keyword: str, vr: str, text: str) -> None:
    if vr == "PN":
        groups = text.split("=")
        if len(groups) > 3 or any(len(g) > PN_GROUP_MAX or g.count("^") > 4 for g in groups):
            raise WorklistError(f"answer's {keyword} is not a valid person name (at most 3 component groups of "
                                f"{PN_GROUP_MAX} characters and 5 components)")
    elif vr in MAX_VALUE_LEN and len(text) > MAX_VALUE_LEN[vr]:
        raise WorklistError(f"answer's {keyword} is {len(text)} characters long; {vr} allows {MAX_VALUE_LEN[vr]}")


def _date(ds: Dataset, keyword: str) -> date | None:
    raw = _text(ds, keyword).replace(".", "")  # ACR-NEMA wrote YYYY.MM.DD
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y%m%d").date()
    except ValueError:
        raise WorklistError(f"answer's {keyword} is not a valid date (YYYYMMDD)") from None


def _time(ds: Dataset, keyword: str) -> time | None:
    raw = _text(ds, keyword).replace(":", "")  # ACR-NEMA wrote HH:MM:SS
    if not raw:
        return None
    whole, _, frac = raw.partition(".")
    if len(whole) not in (2, 4, 6) or not whole.isdigit() or (frac and not frac.isdigit()):
        raise WorklistError(f"answer's {keyword} is not a valid time (HHMMSS.FFFFFF)")
    parts = [int(whole[i:i + 2]) for i in range(0, len(whole), 2)] + [0, 0]
    micro = int((frac + "000000")[:6]) if frac else 0
    try:
        return time(parts[0], parts[1], min(parts[2], 59), micro)  # 60: a leap second
    except ValueError:
        raise WorklistError(f"answer's {keyword} is not a valid time (HHMMSS.FFFFFF)") from None


def _codes(sps: Dataset) -> tuple[ProtocolCode, ...]:
    out = []
    for code in _get(sps, "ScheduledProtocolCodeSequence") or ():
        value = _text(code, "CodeValue") or _text(code, "LongCodeValue") or _text(code, "URNCodeValue")
        if not value:
            raise WorklistError("answer's ScheduledProtocolCodeSequence has an item without a code value")
        out.append(ProtocolCode(value=value, scheme=_text(code, "CodingSchemeDesignator"),
                                meaning=_text(code, "CodeMeaning")))
    return tuple(out)


def _referenced_study(ds: Dataset) -> str:
    for ref in _get(ds, "ReferencedStudySequence") or ():
        uid = _text(ref, "ReferencedSOPInstanceUID")
        if uid:
            if not is_valid_uid(uid):
                raise WorklistError("answer's ReferencedStudySequence has an invalid ReferencedSOPInstanceUID")
            return uid
    return ""
