"""What a C-STORE outcome means for the queue (DESIGN.md invariant 3).

Status classes come from pynetdicom's own table (`pynetdicom.status`: the Storage Service
Class statuses of PS3.4 B.2.3 with the general statuses of PS3.7 Annex C, and
`code_to_category` for codes outside the table), never from a hand-kept list:

- Success -> sent.
- Warning (0001, Bxxx, 0107, 0116, ...) -> sent: the archive stored the object; the warning
  is recorded with the delivery.
- Failure:
  - out of resources (A7xx) and resource limitation (0213) -> retry, the destination backs
    off: the archive is short of something, not the object wrong;
  - processing failure (0110) -> retried once, for this object only (the rest of the backlog
    goes on); a second processing failure in a row quarantines it;
  - every other failure (A9xx, Cxxx, 0122, 0124, ...) -> quarantine until an operator looks.
- Cancel (FE00): C-STORE cannot be cancelled and dxgate never asks; the archive did not store
  the object and the object is not at fault -> retry, the destination backs off.
- Pending (FF00/FF01) is no final answer to a C-STORE, and a code no table knows is treated
  as a failure (PS3.7 C.1): both quarantine, naming the code, for an operator to look at;
  resending would only get the same answer.

Timeouts, refused connections, aborts and transient association rejections are retried with
the destination's backoff; a permanent rejection quarantines.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pynetdicom import status as dicom_status


class Outcome(enum.StrEnum):
    SENT = "sent"  # stored (success or a warning)
    RETRY = "retry"  # transient: back off and resend the same UID
    QUARANTINED = "quarantined"  # permanent: parked with a reason until an operator releases it


class Scope(enum.StrEnum):
    """Whom a RETRY is about: the destination (it backs off, its whole backlog waits) or only
    this object (it waits on its own; the rest of the backlog goes on)."""

    DESTINATION = "destination"
    OBJECT = "object"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    scope: Scope = Scope.DESTINATION
    warning: bool = False  # SENT with a warning status: stored, the warning is recorded


PROCESSING_FAILURE = 0x0110
RESOURCE_LIMITATION = 0x0213
CANCEL = 0xFE00


def category(status: int) -> str:
    """pynetdicom's category of a C-STORE status: Success, Warning, Failure, Cancel, Pending
    or Unknown."""
    known = dicom_status.STORAGE_SERVICE_CLASS_STATUS.get(status)
    return known[0] if known else dicom_status.code_to_category(status)


def describe(status: int) -> str:
    """'0xA700 (Failure: Refused: Out of Resources)' and the like, for queue rows and logs."""
    known = dicom_status.STORAGE_SERVICE_CLASS_STATUS.get(status)
    name = f"{known[0]}: {known[1]}" if known and known[1] else category(status)
    return f"0x{status:04X} ({name})"


def out_of_resources(status: int) -> bool:
    return status & 0xFF00 == 0xA700 or status == RESOURCE_LIMITATION


def classify_status(status: int, previous: int | None = None) -> Verdict:
    """Classify the Status of a C-STORE response; `previous` is the status the last attempt
    of the same delivery got (None: no answer or none yet)."""
    text = describe(status)
    kind = category(status)
    if kind == dicom_status.STATUS_SUCCESS:
        return Verdict(Outcome.SENT, text)
    if kind == dicom_status.STATUS_WARNING:
        return Verdict(Outcome.SENT, f"stored with a warning: {text}", warning=True)
    if kind == dicom_status.STATUS_CANCEL:
        return Verdict(Outcome.RETRY, f"archive answered {text}; not stored")
    if kind == dicom_status.STATUS_FAILURE:
        if out_of_resources(status):
            return Verdict(Outcome.RETRY, f"archive answered {text}")
        if status == PROCESSING_FAILURE and previous != PROCESSING_FAILURE:
            return Verdict(Outcome.RETRY, f"archive answered {text}; retried once", scope=Scope.OBJECT)
        return Verdict(Outcome.QUARANTINED, f"archive refused the object: {text}")
    if kind == dicom_status.STATUS_PENDING:
        return Verdict(Outcome.QUARANTINED, f"archive refused the object: {text} is no final C-STORE status")
    return Verdict(Outcome.QUARANTINED, f"archive refused the object: {text}, a status no table knows "
                                        "(treated as a failure)")


def classify_rejection(result: int, source: int, reason: int) -> Verdict:
    """Classify an A-ASSOCIATE-RJ (result 1: rejected-permanent, 2: rejected-transient)."""
    text = f"association rejected (result {result}, source {source}, reason {reason})"
    if result == 2:
        return Verdict(Outcome.RETRY, text + ", transient")
    return Verdict(Outcome.QUARANTINED, text + ", permanent")


def classify_transport(what: str) -> Verdict:
    """Timeouts, refused connections and aborts: the outcome is unknown, so resend later."""
    return Verdict(Outcome.RETRY, what)
