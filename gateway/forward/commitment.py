"""Storage Commitment Push Model, SCU side (PS3.4 Annex J): ask, wait, apply the report.

After a batch is stored, its instances are asked about in ONE transaction (a Transaction UID
from pydicom's generate_uid, written to the state database BEFORE the N-ACTION goes out), on
the same association; the association is held open `commitment_hold_s` for a report on it,
and a report may also come later on a new association to the listener (commit_listener).
A transaction without a report for `commitment_timeout_s` is asked again (same Transaction
UID), at most `commitment_asks` times; then an alarm is raised and its files are kept.
Instances reported failed are sent again once, then quarantined with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import build_context, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext

from gateway.alarms import Alarms
from gateway.config import DestinationConfig
from gateway.forward import scu
from gateway.spool import ReportOutcome, Spool, Transaction, TransactionState

LOGGER = logging.getLogger(__name__)

PUSH_MODEL = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model SOP Class
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"  # its well-known SOP Instance
REQUEST_COMMITMENT = 1  # N-ACTION Action Type ID
ALL_COMMITTED, SOME_FAILED = 1, 2  # N-EVENT-REPORT Event Type IDs
FAILURE_REASONS = {  # PS3.3 C.14.1.1 Failure Reason
    0x0110: "Processing failure", 0x0112: "No such object instance", 0x0213: "Resource limitation",
    0x0122: "Referenced SOP Class not supported", 0x0119: "Class / Instance conflict",
    0x0131: "Duplicate transaction UID",
}
PROCESSING_FAILURE = 0x0110
SUCCESS = 0x0000


def context() -> PresentationContext:
    return build_context(PUSH_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])


def request_dataset(transaction_uid: str, items: Sequence[tuple[str, str]]) -> Dataset:
    """The N-ACTION Action Information: Transaction UID and Referenced SOP Sequence."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    refs = []
    for uid, sop_class in items:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = uid
        refs.append(item)
    ds.ReferencedSOPSequence = refs
    return ds


def describe_reason(code: int | None) -> str:
    if code is None:
        return "no Failure Reason given"
    return f"Failure Reason 0x{code:04X} ({FAILURE_REASONS.get(code, 'unknown reason')})"


@dataclass(frozen=True)
class Report:
    transaction_uid: str
    committed: tuple[tuple[str, str], ...]  # (SOP Instance UID, SOP Class UID)
    failed: tuple[tuple[str, str, str], ...]  # (SOP Instance UID, SOP Class UID, reason)


def parse_report(ds: Dataset) -> Report:
    """An N-EVENT-REPORT's Event Information; ValueError when it has no Transaction UID."""
    txn = str(ds.get("TransactionUID", "") or "")
    if not txn:
        raise ValueError("the report has no Transaction UID")
    committed = tuple((str(i.get("ReferencedSOPInstanceUID", "")), str(i.get("ReferencedSOPClassUID", "")))
                      for i in ds.get("ReferencedSOPSequence", []))
    failed = tuple((str(i.get("ReferencedSOPInstanceUID", "")), str(i.get("ReferencedSOPClassUID", "")),
                    describe_reason(i.get("FailureReason"))) for i in ds.get("FailedSOPSequence", []))
    return Report(txn, committed, failed)


@dataclass(frozen=True)
class CommitmentEvent:
    """For metrics and logs: what happened to how many instances of a destination."""

    destination: str
    outcome: str  # requested, request_failed, committed, resent, quarantined, unanswered
    count: int


class Committer:
    """Asks destinations with commitment = true and applies their reports to the spool."""

    def __init__(self, spool: Spool, *, calling_ae: str, clock: Callable[[], float], alarms: Alarms,
                 extra_handlers: Sequence[EventHandlerType] = (), batch_size: int = 1000) -> None:
        self._spool = spool
        self._calling_ae = calling_ae
        self._clock = clock
        self._alarms = alarms
        self._handlers = tuple(extra_handlers)
        self._batch = batch_size
        self._waiters: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.wake: Callable[[str], None] | None = None  # a destination has deliveries due again (resend)
        self.on_event: Callable[[CommitmentEvent], None] | None = None  # metrics hook
        self.on_quarantine: Callable[[str, str, str], None] | None = None  # (uid, destination, reason)

    def resume(self) -> None:
        """At start: every transaction still open is asked again at the next pass, and those
        already given up on are alarmed again."""
        n = self._spool.commitments.reopen(self._clock())
        if n:
            LOGGER.warning("%d storage commitment transaction(s) unanswered at the last stop: asked again", n)
        for txn in self._spool.commitments.transactions(state=TransactionState.UNANSWERED):
            self._alarm_unanswered(txn)

    def handlers(self) -> list[EventHandlerType]:
        """Bind on an association that asks for commitment, to take a report on it."""
        return [(evt.EVT_N_EVENT_REPORT, self.handle_report)]

    def next_due(self, dest: DestinationConfig) -> float | None:
        """When the destination's next request is due: never before its backoff ends."""
        due = self._spool.commitments.next_due(dest.name) if dest.commitment else None
        backoff = self._spool.backoff(dest.name) if due is not None else None
        return due if due is None or backoff is None else max(due, backoff.retry_at)

    def interrupt(self) -> None:
        """End every hold for a report now (shutdown)."""
        with self._lock:
            for waiter in self._waiters.values():
                waiter.set()

    # --- asking ------------------------------------------------------------------------------

    def request(self, session: scu.Session, dest: DestinationConfig, uids: Sequence[str]) -> None:
        """Ask about freshly stored instances on the association that stored them."""
        if not uids:
            return
        txn = self._open(dest, uids)
        if txn is not None:
            self._ask(session, dest, txn)

    def ask_due(self, dest: DestinationConfig, stop: threading.Event | None = None,
                attempt: scu.Attempt | None = None) -> None:
        """Ask about stored instances no transaction covers yet, and again about overdue ones;
        give up (alarm) on a transaction asked `commitment_asks` times. Own association."""
        if not dest.commitment:
            return
        while uids := self._spool.commitments.unasked(dest.name, self._batch):
            if self._open(dest, uids) is None:
                break
        now = self._clock()
        due = []
        for txn in self._spool.commitments.due(dest.name, now):
            if txn.asks >= dest.commitment_asks:
                self._give_up(dest, txn)
            else:
                due.append(txn.transaction_uid)
        if not due or (stop is not None and stop.is_set()):
            return
        backoff = self._spool.backoff(dest.name)
        if backoff is not None and backoff.retry_at > now:
            return  # the destination is backing off: asked with its next pass
        try:
            session = scu.open_session(dest, self._calling_ae, [context()], self.handlers() + list(self._handlers),
                                       attempt)
        except scu.AssociationFailed as exc:
            for txn_uid in due:
                self._asked(dest, txn_uid, f"no association for the commitment request: {exc}")
            return
        try:
            for txn_uid in due:
                if stop is not None and stop.is_set():
                    return
                self._ask(session, dest, txn_uid)
        finally:
            session.release()

    def _open(self, dest: DestinationConfig, uids: Sequence[str]) -> str | None:
        txn = str(generate_uid(prefix=None))  # 2.25.<UUID>: unique without borrowing an organisation root
        now = self._clock()
        items = self._spool.commitments.open(txn, dest.name, uids, now, now)  # due at once: asked now
        return txn if items else None

    def _ask(self, session: scu.Session, dest: DestinationConfig, txn: str) -> None:
        items = self._spool.commitments.items(txn)
        if not items:
            return
        waiter = threading.Event()
        with self._lock:
            self._waiters[txn] = waiter
        try:
            status = session.n_action(request_dataset(txn, items), REQUEST_COMMITMENT, PUSH_MODEL,
                                      PUSH_MODEL_INSTANCE)
            if status != SUCCESS:
                why = "no N-ACTION response" if status is None else f"N-ACTION answered 0x{status:04X}"
                self._asked(dest, txn, f"commitment request refused: {why}")
                return
            self._asked(dest, txn, None)
            LOGGER.info("%s: storage commitment asked for %d instance(s), transaction %s", dest.name, len(items), txn)
            self._emit(dest.name, "requested", len(items))
            if dest.commitment_hold_s > 0 and session.established:
                waiter.wait(dest.commitment_hold_s)  # a report on this association ends the wait
        finally:
            with self._lock:
                self._waiters.pop(txn, None)

    def _asked(self, dest: DestinationConfig, txn: str, error: str | None) -> None:
        now = self._clock()
        self._spool.commitments.asked(txn, now, now + dest.commitment_timeout_s, error)
        if error:
            LOGGER.warning("%s: %s (transaction %s)", dest.name, error, txn)
            self._emit(dest.name, "request_failed", len(self._spool.commitments.items(txn)))

    def _give_up(self, dest: DestinationConfig, txn: Transaction) -> None:
        reason = (f"no storage commitment report after {txn.asks} request(s), "
                  f"{dest.commitment_timeout_s:.0f} s apart")
        self._spool.commitments.give_up(txn.transaction_uid, self._clock(), reason)
        stale = self._spool.commitments.transaction(txn.transaction_uid)
        if stale is not None:
            self._alarm_unanswered(stale)
        self._emit(dest.name, "unanswered", len(self._spool.commitments.items(txn.transaction_uid)))

    def _alarm_unanswered(self, txn: Transaction) -> None:
        n = len(self._spool.commitments.items(txn.transaction_uid))
        self._alarms.raise_("commitment-unanswered",
                            f"{txn.destination} never reported storage commitment for {n} instance(s) "
                            f"(transaction {txn.transaction_uid}); their spool files are kept", key=txn.destination)

    # --- reports -----------------------------------------------------------------------------

    def handle_report(self, event: evt.Event) -> tuple[int, Dataset | None]:
        """EVT_N_EVENT_REPORT handler (same association, or the listener's)."""
        try:
            ds = event.event_information
            report = parse_report(ds)
        except Exception as exc:  # a malformed report is answered, never raised
            LOGGER.warning("storage commitment report unreadable: %s", exc)
            return PROCESSING_FAILURE, None
        outcome = self.apply(report)
        return (SUCCESS if outcome is not None else PROCESSING_FAILURE), None

    def apply(self, report: Report) -> ReportOutcome | None:
        """Apply a report to the spool; None when its transaction is unknown."""
        outcome = self._spool.commitments.apply(report.transaction_uid, report.committed, report.failed,
                                                self._clock())
        if outcome is None:
            LOGGER.warning("storage commitment report for unknown transaction %s ignored", report.transaction_uid)
            return None
        dest = outcome.destination
        LOGGER.info("%s: commitment report for %s: %d committed, %d sent again, %d quarantined, %d unknown",
                    dest, report.transaction_uid, len(outcome.committed), len(outcome.resend),
                    len(outcome.quarantined), len(outcome.unknown))
        for kind, n in (("committed", len(outcome.committed)), ("resent", len(outcome.resend)),
                        ("quarantined", len(outcome.quarantined))):
            if n:
                self._emit(dest, kind, n)
        for uid, why in outcome.quarantined:
            LOGGER.error("quarantined %s for %s: %s", uid, dest, why)
            if self.on_quarantine is not None:
                self.on_quarantine(uid, dest, why)
        if outcome.quarantined:
            self._alarms.raise_("commitment-failed", f"{dest} reported storage commitment failed twice for "
                                f"{len(outcome.quarantined)} instance(s); quarantined", key=dest)
        if outcome.answered:
            self._alarms.clear("commitment-unanswered", dest)
        with self._lock:
            waiter = self._waiters.get(report.transaction_uid)
        if waiter is not None:
            waiter.set()
        if (outcome.resend or outcome.committed) and self.wake is not None:
            self.wake(dest)  # resend at once; release the committed files
        return outcome

    def _emit(self, destination: str, outcome: str, count: int) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(CommitmentEvent(destination, outcome, count))
        except Exception:  # a metrics hook never breaks commitment
            LOGGER.exception("commitment event hook failed")
