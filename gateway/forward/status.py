"""What a C-STORE outcome means for the queue (DESIGN.md invariant 3).

Success and the storage warnings B000/B006/B007 mean stored. Out of resources (A7xx),
timeouts, refused connections, aborts and transient association rejections are worth
retrying. Everything else the archive says is final until an operator looks: quarantine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    SENT = "sent"  # stored (success or a storage warning)
    RETRY = "retry"  # transient: back off and resend the same UID
    QUARANTINED = "quarantined"  # permanent: parked with a reason until an operator releases it


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str


STORED_WARNINGS = frozenset({0xB000, 0xB006, 0xB007})

_STATUS_NAMES = {
    0x0000: "success",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
    0x0117: "invalid SOP instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorised",
    0x0210: "duplicate invocation",
    0x0211: "unrecognised operation",
    0x0212: "mistyped argument",
    0x0110: "processing failure",
}


def describe(status: int) -> str:
    """'0xA700 (out of resources)' and the like, for queue rows and logs."""
    if status in _STATUS_NAMES:
        name = _STATUS_NAMES[status]
    elif status & 0xFF00 == 0xA700:
        name = "out of resources"
    elif status & 0xFF00 == 0xA900:
        name = "data set does not match SOP class"
    elif status & 0xF000 == 0xC000:
        name = "cannot understand"
    else:
        name = "unknown status"
    return f"0x{status:04X} ({name})"


def classify_status(status: int) -> Verdict:
    """Classify the Status of a C-STORE response."""
    text = describe(status)
    if status == 0x0000 or status in STORED_WARNINGS:
        return Verdict(Outcome.SENT, text)
    if status & 0xFF00 == 0xA700:
        return Verdict(Outcome.RETRY, f"archive answered {text}")
    return Verdict(Outcome.QUARANTINED, f"archive refused the object: {text}")


def classify_rejection(result: int, source: int, reason: int) -> Verdict:
    """Classify an A-ASSOCIATE-RJ (result 1: rejected-permanent, 2: rejected-transient)."""
    text = f"association rejected (result {result}, source {source}, reason {reason})"
    if result == 2:
        return Verdict(Outcome.RETRY, text + ", transient")
    return Verdict(Outcome.QUARANTINED, text + ", permanent")


def classify_transport(what: str) -> Verdict:
    """Timeouts, refused connections and aborts: the outcome is unknown, so resend later."""
    return Verdict(Outcome.RETRY, what)
