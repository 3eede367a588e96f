"""Turn one MWL C-FIND answer (a pydicom Dataset) into WorklistItems.

Policy for malformed answers: an answer whose *required* content is missing or invalid
(no Scheduled Procedure Step Sequence, no Patient ID, no or invalid Study Instance UID, an
unparseable date or time, a string that cannot be decoded with confidence) makes
`parse_answer` raise WorklistError naming the attribute (by keyword), never its value (values
are patient data). The client skips that answer, logs the reason and counts it
(QueryResult.skipped), and keeps the other answers: one broken RIS entry must not hide the rest
of the room's worklist. Optional attributes that are absent become "" / None.

Strings are decoded by gateway.worklist.text, with pydicom's character set handling and the
answer's Specific Character Set (a sequence item's own, when it declares one), from the raw
bytes of the answer: every string in a WorklistItem is Unicode text with no escape sequence and
no control character, whatever the RIS encoding was. Text that cannot be decoded with
confidence (non-ASCII bytes with no character set declared, escape sequences where the
character set has no code extensions or that designate an undeclared set, invalid UTF-8) is
refused, never guessed.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time
from functools import partial
from typing import Any

from pydicom.datadict import dictionary_VM, dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import MAX_VALUE_LEN, PersonName

from gateway.errors import WorklistError
from gateway.types import ProtocolCode, WorklistItem
from gateway.uids import is_valid_uid
from gateway.worklist.text import DEFAULT, CharacterSet, UndecodableText, character_set, check_text, decode_values

LOGGER = logging.getLogger(__name__)

PN_GROUP_MAX = 64  # characters per component group (PS3.5 6.2)
_CHARSET_TAG = 0x00080005


def parse_answer(ds: Dataset) -> list[WorklistItem]:
    """One WorklistItem per item of the Scheduled Procedure Step Sequence (normally one)."""
    return [item for item, _ in parse_steps(ds)]


def parse_steps(ds: Dataset) -> list[tuple[WorklistItem, str]]:
    """Like parse_answer, each item with its step's Scheduled Station Name ("" when none), for
    the client's own matching (WorklistItem does not keep it)."""
    answer = _Answer(ds, DEFAULT)
    sps_seq = answer.items("ScheduledProcedureStepSequence")
    if not sps_seq:
        raise WorklistError("answer has no ScheduledProcedureStepSequence item")
    patient_id = answer.text("PatientID")
    if not patient_id:
        raise WorklistError("answer has no PatientID")
    study_uid = answer.text("StudyInstanceUID")
    if not study_uid:
        raise WorklistError("answer has no StudyInstanceUID")
    if not is_valid_uid(study_uid):
        raise WorklistError("answer's StudyInstanceUID is not a valid UID")
    ref_uid, ref_class = _referenced_study(answer)
    item_of_step = partial(
        WorklistItem,
        patient_name=answer.text("PatientName"),
        patient_id=patient_id,
        patient_birth_date=_date(answer, "PatientBirthDate"),
        patient_sex=answer.text("PatientSex").upper(),
        accession_number=answer.text("AccessionNumber"),
        study_instance_uid=study_uid,
        requested_procedure_id=answer.text("RequestedProcedureID"),
        requested_procedure_description=answer.text("RequestedProcedureDescription"),
        referring_physician=answer.text("ReferringPhysicianName"),
        issuer_of_patient_id=answer.text("IssuerOfPatientID"),
        referenced_study_sop_instance_uid=ref_uid,
        referenced_study_sop_class_uid=ref_class,
        procedure_codes=_codes(answer, "RequestedProcedureCodeSequence"),
    )
    steps = []
    for sps in sps_seq:
        start_date = _date(sps, "ScheduledProcedureStepStartDate")
        if start_date is None:
            raise WorklistError("answer has no ScheduledProcedureStepStartDate")
        start_time = _time(sps, "ScheduledProcedureStepStartTime")
        item = item_of_step(
            sps_id=sps.text("ScheduledProcedureStepID"),
            sps_description=sps.text("ScheduledProcedureStepDescription"),
            sps_start=datetime.combine(start_date, start_time or time()),
            modality=sps.text("Modality").upper(),
            scheduled_station_ae=sps.text("ScheduledStationAETitle"),
            protocol_codes=_codes(sps, "ScheduledProtocolCodeSequence"),
        )
        steps.append((item, sps.text("ScheduledStationName")))
    return steps


class _Answer:
    """One dataset of an answer (the identifier or a sequence item) with its character set.

    Values are read from the raw bytes when the element has not been decoded yet (the normal
    case: pynetdicom hands over undecoded elements), so that gateway.worklist.text decides how
    they are decoded. An element pydicom decoded already (a dataset built in Python, or one whose
    elements were printed) is checked as text: no control character, ESC or U+FFFD, and ASCII
    only where no character set is declared."""

    def __init__(self, ds: Dataset, inherited: CharacterSet | UndecodableText) -> None:
        self.ds = ds
        self.charset: CharacterSet | UndecodableText = inherited
        own = ds.get_item(_CHARSET_TAG)
        if own is not None:
            try:
                self.charset = character_set(own.value)
            except UndecodableText as exc:  # matters only for text that is not plain ASCII
                self.charset = exc

    def text(self, keyword: str) -> str:
        """The attribute's text, checked so that it can go into a valid object: decoded with
        confidence, one value where the attribute allows one, within its VR's length. Errors
        name the attribute, never its value."""
        values = self._values(keyword)
        try:
            vm, vr = dictionary_VM(keyword), dictionary_VR(keyword)
        except KeyError:
            vm, vr = "1", ""
        if len(values) > 1 and vm == "1":
            raise WorklistError(f"answer's {keyword} has {len(values)} values; it allows one")
        texts = [v.strip() for v in values]
        for text in texts:
            _check_length(keyword, vr, text)
        return "\\".join(texts)

    def items(self, keyword: str) -> list[_Answer]:
        """The items of a sequence attribute ([] when absent or empty)."""
        if self.ds.get_item(keyword) is None:
            return []
        try:
            value = self.ds[keyword].value
        except Exception:  # a hostile sequence may fail in any way: it is that answer's error
            raise WorklistError(f"answer's {keyword} cannot be read as a sequence") from None
        if value is None or value == "":
            return []
        if not isinstance(value, Sequence):
            raise WorklistError(f"answer's {keyword} is not a sequence")
        return [_Answer(item, self.charset) for item in value]

    def _values(self, keyword: str) -> list[str]:
        elem = self.ds.get_item(keyword)
        if elem is None:
            return []
        vr = dictionary_VR(keyword)
        try:
            if isinstance(elem, RawDataElement) or isinstance(elem.value, bytes):
                raw = elem.value
                if raw is not None and not isinstance(raw, bytes):
                    raise WorklistError(f"answer's {keyword} is not text")
                if not raw or (raw.isascii() and b"\x1b" not in raw):
                    return decode_values(raw, DEFAULT, vr)  # ASCII reads alike in every character set
                return decode_values(raw, self._known_charset(), vr)
            return self._checked(keyword, elem.value, vr)
        except UndecodableText as exc:
            raise WorklistError(f"answer's {keyword} {exc}") from None

    def _checked(self, keyword: str, value: Any, vr: str) -> list[str]:
        if value is None or value == "":
            return []
        values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
        if not all(isinstance(v, (str, PersonName)) for v in values):
            raise WorklistError(f"answer's {keyword} is not text")
        texts = [str(v) for v in values]
        for text in texts:
            check_text(text, vr=vr, charset=self._known_charset() if not text.isascii() else None)
        return texts

    def _known_charset(self) -> CharacterSet:
        if isinstance(self.charset, UndecodableText):
            raise UndecodableText(str(self.charset))
        return self.charset


def _check_length(keyword: str, vr: str, text: str) -> None:
    if vr == "PN":
        groups = text.split("=")
        if len(groups) > 3 or any(len(g) > PN_GROUP_MAX or g.count("^") > 4 for g in groups):
            raise WorklistError(f"answer's {keyword} is not a valid person name (at most 3 component groups of "
                                f"{PN_GROUP_MAX} characters and 5 components)")
    elif vr in MAX_VALUE_LEN and len(text) > MAX_VALUE_LEN[vr]:
        raise WorklistError(f"answer's {keyword} is {len(text)} characters long; {vr} allows {MAX_VALUE_LEN[vr]}")


def _date(answer: _Answer, keyword: str) -> date | None:
    raw = answer.text(keyword).replace(".", "")  # ACR-NEMA wrote YYYY.MM.DD
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y%m%d").date()
    except ValueError:
        raise WorklistError(f"answer's {keyword} is not a valid date (YYYYMMDD)") from None


def _time(answer: _Answer, keyword: str) -> time | None:
    raw = answer.text(keyword).replace(":", "")  # ACR-NEMA wrote HH:MM:SS
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


def _codes(parent: _Answer, keyword: str) -> tuple[ProtocolCode, ...]:
    out = []
    for code in parent.items(keyword):
        value = code.text("CodeValue") or code.text("LongCodeValue") or code.text("URNCodeValue")
        if not value:
            if not code.text("CodingSchemeDesignator") and not code.text("CodeMeaning"):
                continue  # the empty item of a return key the server echoed unfilled
            raise WorklistError(f"answer's {keyword} has an item without a code value")
        out.append(ProtocolCode(value=value, scheme=code.text("CodingSchemeDesignator"),
                                meaning=code.text("CodeMeaning")))
    return tuple(out)


def _referenced_study(answer: _Answer) -> tuple[str, str]:
    """(instance UID, SOP class UID) of the Referenced Study Sequence; a class that is not a
    valid UID is left empty (the image then names Detached Study Management, as SWF did)."""
    for ref in answer.items("ReferencedStudySequence"):
        uid = ref.text("ReferencedSOPInstanceUID")
        if uid:
            if not is_valid_uid(uid):
                raise WorklistError("answer's ReferencedStudySequence has an invalid ReferencedSOPInstanceUID")
            sop_class = ref.text("ReferencedSOPClassUID")
            return uid, sop_class if is_valid_uid(sop_class) else ""
    return "", ""
