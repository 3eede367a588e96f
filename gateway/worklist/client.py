"""Modality Worklist C-FIND SCU (IHE SWF RAD-5): ask the RIS what this room is to do.

Matching keys, each sent only when the caller asks for it (an empty key matches everything):
inside the Scheduled Procedure Step Sequence, Modality, Scheduled Station AE Title, Scheduled
Station Name and an SPS start date range; Patient ID / Accession Number when given. Which of
them the daemon sends is configured ([worklist] match_station_ae, modality, station_name,
date_range): many RIS leave Scheduled Station AE Title empty in their entries, and an empty
value never matches a non-empty key (PS3.4 C.2.2.2), so matching it hides the whole worklist.
Every other attribute a WorklistItem holds is asked for as a return key. Answers are filtered
again on the client, because some servers ignore matching keys they do not index. Malformed
answers are skipped and counted (see gateway.worklist.parse for the policy).
"""

from __future__ import annotations

import fnmatch
import logging
import time
from dataclasses import dataclass
from datetime import date, timedelta

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

# pynetdicom makes its SOP class names at import time, where mypy cannot see them
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from gateway.errors import WorklistError
from gateway.netopts import ApplicationEntity, configure_pynetdicom, nodelay_handlers
from gateway.types import WorklistItem
from gateway.worklist.parse import parse_steps

LOGGER = logging.getLogger(__name__)

PENDING = (0xFF00, 0xFF01)
MAX_PDU = 131072
# Sent with the query: servers that convert (Orthanc) then answer in UTF-8, which holds every
# name; servers that do not still declare their own character set in each answer.
QUERY_CHARSET = "ISO_IR 192"


@dataclass(frozen=True)
class QueryResult:
    """What one worklist query gave: the usable items and what was dropped, and why."""

    items: tuple[WorklistItem, ...]
    answers: int  # identifiers the server sent
    skipped: tuple[str, ...]  # one reason per malformed answer (no patient data in it)
    filtered_out: int  # well-formed items the server should not have sent


def should_replace_cache(result: QueryResult) -> bool:
    """Whether a day's answer may replace the offline cache: never by an answer that kept
    nothing because every answer was malformed (the cache would show an empty day)."""
    return bool(result.items) or not result.skipped


def build_query(*, modality: str, station_ae: str, start: date | None, end: date | None, patient_id: str = "",
                accession_number: str = "", station_name: str = "") -> Dataset:
    """The C-FIND identifier: matching keys set, return keys present and empty (no date range
    when `start` is None)."""
    q = Dataset()
    q.PatientName = ""
    q.PatientID = patient_id
    q.IssuerOfPatientID = ""
    q.PatientBirthDate = ""
    q.PatientSex = ""
    q.AccessionNumber = accession_number
    q.ReferringPhysicianName = ""
    q.StudyInstanceUID = ""
    q.RequestedProcedureID = ""
    q.RequestedProcedureDescription = ""
    procedure = Dataset()
    procedure.CodeValue = ""
    procedure.CodingSchemeDesignator = ""
    procedure.CodeMeaning = ""
    q.RequestedProcedureCodeSequence = Sequence([procedure])
    ref = Dataset()
    ref.ReferencedSOPClassUID = ""
    ref.ReferencedSOPInstanceUID = ""
    q.ReferencedStudySequence = Sequence([ref])
    sps = Dataset()
    sps.Modality = modality
    sps.ScheduledStationAETitle = station_ae
    sps.ScheduledStationName = station_name
    sps.ScheduledProcedureStepStartDate = "" if start is None or end is None else _date_range(start, end)
    sps.ScheduledProcedureStepStartTime = ""
    sps.ScheduledProcedureStepID = ""
    sps.ScheduledProcedureStepDescription = ""
    sps.ScheduledPerformingPhysicianName = ""
    code = Dataset()
    code.CodeValue = ""
    code.CodingSchemeDesignator = ""
    code.CodeMeaning = ""
    sps.ScheduledProtocolCodeSequence = Sequence([code])
    q.ScheduledProcedureStepSequence = Sequence([sps])
    q.SpecificCharacterSet = QUERY_CHARSET
    return q


def query_worklist(*, host: str, port: int, called_ae: str, calling_ae: str, modality: str = "DX",
                   station_ae: str = "", station_name: str = "", on: date | None = None, days_ahead: int = 0,
                   days_before: int = 0, match_date: bool = True, patient_id: str = "",
                   accession_number: str = "", timeout_s: float = 10.0, max_query_s: float = 30.0,
                   max_answers: int = 2000) -> list[WorklistItem]:
    """The scheduled steps from `on - days_before` to `on + days_ahead` (`on` defaults to today; any
    date without match_date), by start. Empty `modality`, `station_ae`, `station_name`: not matched."""
    return list(query_worklist_result(
        host=host, port=port, called_ae=called_ae, calling_ae=calling_ae, modality=modality,
        station_ae=station_ae, station_name=station_name, on=on, days_ahead=days_ahead, days_before=days_before,
        match_date=match_date, patient_id=patient_id, accession_number=accession_number, timeout_s=timeout_s,
        max_query_s=max_query_s, max_answers=max_answers).items)


def query_worklist_result(*, host: str, port: int, called_ae: str, calling_ae: str, modality: str = "DX",
                          station_ae: str = "", station_name: str = "", on: date | None = None,
                          days_ahead: int = 0, days_before: int = 0, match_date: bool = True,
                          patient_id: str = "", accession_number: str = "",
                          timeout_s: float = 10.0, max_query_s: float = 30.0, max_answers: int = 2000) -> QueryResult:
    """Like query_worklist, with the count of answers skipped as malformed or filtered out.

    Every query is bounded: it ends with WorklistError once it took `max_query_s` in all or
    brought more than `max_answers` answers (a server streaming pending answers forever must
    neither hang the console nor fill the memory); a partial list is never shown as the day's.
    """
    if days_ahead < 0 or days_before < 0:
        raise WorklistError(f"days_ahead and days_before must be >= 0, not {days_ahead} and {days_before}")
    day = on or date.today()
    start: date | None = day - timedelta(days=days_before) if match_date else None
    end: date | None = day + timedelta(days=days_ahead) if match_date else None
    where = f"worklist {called_ae}@{host}:{port}"
    query = build_query(modality=modality, station_ae=station_ae, station_name=station_name, start=start, end=end,
                        patient_id=patient_id, accession_number=accession_number)
    identifiers = _find(query, host=host, port=port, called_ae=called_ae, calling_ae=calling_ae,
                        timeout_s=timeout_s, where=where, max_query_s=max_query_s, max_answers=max_answers)
    items: list[WorklistItem] = []
    skipped: list[str] = []
    filtered_out = 0
    for n, ident in enumerate(identifiers, 1):
        if ident is None:
            skipped.append(f"answer {n}: the identifier could not be decoded")
            LOGGER.warning("%s: answer %d skipped: the identifier could not be decoded", where, n)
            continue
        try:
            parsed = parse_steps(ident)
        except WorklistError as exc:  # its text names the attribute and the reason, never the value
            skipped.append(f"answer {n}: {exc}")
            LOGGER.warning("%s: answer %d skipped: %s", where, n, exc)
            continue
        for item, item_station_name in parsed:
            if _matches(item, item_station_name, modality=modality, station_ae=station_ae,
                        station_name=station_name, start=start, end=end, patient_id=patient_id,
                        accession_number=accession_number):
                items.append(item)
            else:
                filtered_out += 1
    if filtered_out:
        LOGGER.info("%s: %d item(s) did not match the query and were dropped", where, filtered_out)
    if skipped:
        LOGGER.warning("%s: %d of %d answer(s) skipped as malformed", where, len(skipped), len(identifiers))
    items.sort(key=lambda i: (i.sps_start is None, i.sps_start or 0, i.accession_number))
    return QueryResult(items=tuple(items), answers=len(identifiers), skipped=tuple(skipped),
                       filtered_out=filtered_out)


def _find(query: Dataset, *, host: str, port: int, called_ae: str, calling_ae: str, timeout_s: float,
          where: str, max_query_s: float, max_answers: int) -> list[Dataset | None]:
    # identifiers must not be logged (patient data), nor decoded by printing them: the parser
    # decodes their raw bytes itself (idempotent; the composition root does the same)
    configure_pynetdicom()
    ae = ApplicationEntity(ae_title=calling_ae)
    ae.add_requested_context(ModalityWorklistInformationFind, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    ae.maximum_pdu_size = MAX_PDU
    assoc = ae.associate(host, port, ae_title=called_ae, max_pdu=MAX_PDU, evt_handlers=nodelay_handlers())
    if assoc.is_rejected:
        raise WorklistError(f"{where}: association rejected (calling AE {calling_ae!r})")
    if not assoc.is_established:
        raise WorklistError(f"{where}: no association (connection refused, aborted or timed out "
                            f"after {timeout_s:g}s; calling AE {calling_ae!r})")
    answers: list[Dataset | None] = []
    last_was_undecodable = False
    deadline = time.monotonic() + max_query_s
    try:
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            if not status:
                if time.monotonic() > deadline:  # the bound in all was passed while waiting: say that
                    raise WorklistError(f"{where}: the query took longer than {max_query_s:g}s in all; ended "
                                        f"after {len(answers)} answers")
                raise WorklistError(f"{where}: no answer within {timeout_s:g}s or association aborted")
            code = int(status.Status)
            if code in PENDING:
                # pynetdicom yields a pending status twice when it cannot decode an identifier:
                # once with None (the broken answer), once more with None; count it once
                if identifier is None and answers and answers[-1] is None and last_was_undecodable:
                    last_was_undecodable = False
                    continue
                last_was_undecodable = identifier is None
                answers.append(identifier)
                if len(answers) > max_answers:
                    assoc.abort()
                    raise WorklistError(f"{where}: more than {max_answers} answers; query ended (narrow it, "
                                        "or raise worklist.max_answers)")
                if time.monotonic() > deadline:
                    assoc.abort()
                    raise WorklistError(f"{where}: the query took longer than {max_query_s:g}s in all; ended "
                                        f"after {len(answers)} answers")
            elif code == 0x0000:
                break
            else:
                raise WorklistError(f"{where}: C-FIND failed with status 0x{code:04X}")
        else:
            if not assoc.is_established:
                raise WorklistError(f"{where}: association ended before the final C-FIND response")
    finally:
        if assoc.is_established:
            assoc.release()
    return answers


def _matches(item: WorklistItem, item_station_name: str, *, modality: str, station_ae: str, station_name: str,
             start: date | None, end: date | None, patient_id: str, accession_number: str) -> bool:
    if modality and item.modality and not _match(modality, item.modality):
        return False
    if station_ae and item.scheduled_station_ae and not _match(station_ae, item.scheduled_station_ae):
        return False
    if station_name and item_station_name and not _match(station_name, item_station_name):
        return False
    if start is not None and end is not None and item.sps_start is not None \
            and not start <= item.sps_start.date() <= end:
        return False
    if patient_id and not _match(patient_id, item.patient_id):
        return False
    if accession_number and not _match(accession_number, item.accession_number):
        return False
    return True


def _match(key: str, value: str) -> bool:
    """DICOM single-value matching, with * and ? wildcards (PS3.4 C.2.2.2)."""
    if "*" in key or "?" in key:
        return fnmatch.fnmatchcase(value, key.replace("[", "[[]"))
    return key == value


def _date_range(start: date, end: date) -> str:
    return start.strftime("%Y%m%d") if start == end else f"{start:%Y%m%d}-{end:%Y%m%d}"
