"""Opening an exam: its text checked, its identity (study, series, procedure step, dose report) assigned once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.dicom import new_uid
from gateway.errors import DxgateError
from gateway.exam_types import Exam
from gateway.types import WorklistItem
from gateway.worklist.cache import text_problem
from gateway.worklist.text import UndecodableText, check_text


def new_exam(item: WorklistItem | None, operator: str, *, uid_root: str, clock: Callable[[], datetime],
             mpps: bool, study_uid: str = "", series_number: int = 1) -> Exam:
    """A new exam; the Study Instance UID comes from the worklist whenever it gives one
    (`study_uid`: an earlier exam's, when one is reopened to append to its study)."""
    if item is not None and (problem := text_problem(item)):
        raise DxgateError(f"this patient or order cannot be written into an image: {problem}")
    try:
        check_text(operator)
    except UndecodableText as exc:
        raise DxgateError(f"the operator's name cannot be written into an image: {exc}") from None
    root = uid_root
    study_uid = study_uid or (item.study_instance_uid if item and item.study_instance_uid else new_uid(root))
    opened = clock()
    # SH, 16 characters: unique per room (one exam at a time), readable as its opening time.
    pps_id = "P" + opened.astimezone(UTC).strftime("%y%m%d%H%M%S%f")[:14]
    return Exam(item=item, study_uid=study_uid, series_uid=new_uid(root), series_number=series_number,
                operator=operator[:64], pps_id=pps_id,
                mpps_uid=new_uid(root) if mpps else "", dose_series_uid=new_uid(root),
                dose_report_uid=new_uid(root))


def grouped_item(items: list[WorklistItem]) -> WorklistItem:
    """The group case's order: the first, naming the others (of one patient, none twice)."""
    if len(items) < 2:
        raise DxgateError("a group needs at least two requested procedures")
    first = items[0]
    if any((i.patient_id, i.issuer_of_patient_id) != (first.patient_id, first.issuer_of_patient_id)
           for i in items[1:]):
        raise DxgateError("grouped procedures must be of one patient (the same Patient ID and issuer)")
    if len({(i.accession_number, i.requested_procedure_id, i.sps_id) for i in items}) != len(items):
        raise DxgateError("a requested procedure is in the group twice")
    return dataclasses.replace(first, grouped=tuple(dataclasses.replace(i, grouped=()) for i in items[1:]))
