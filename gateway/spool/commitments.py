"""Storage commitment transactions in the state database, beside the deliveries they ask about.

A transaction is written before its N-ACTION goes out, and a delivery row names the
transaction asking for it (`commit_txn`), so a report is recognised whenever it comes and a
restart loses nothing: an open transaction is simply asked again. A report is applied in ONE
transaction: the committed rows become 'committed'; a row reported failed is sent again once
(pending, due now) and quarantined with the reason when it fails a second time.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.spool.queue import Queue


class TransactionState(enum.StrEnum):
    OPEN = "open"  # asked (or about to be); waiting for the report
    ANSWERED = "answered"  # every instance it asked about has an answer
    UNANSWERED = "unanswered"  # asked as often as allowed without a report: alarmed, files kept


@dataclass(frozen=True)
class Transaction:
    transaction_uid: str
    destination: str
    state: TransactionState
    asks: int
    created_at: float
    asked_at: float | None
    due_at: float
    last_error: str | None


@dataclass(frozen=True)
class ReportOutcome:
    """What one report did: instances committed, sent again, quarantined; listed but unknown."""

    destination: str
    committed: tuple[str, ...]
    resend: tuple[str, ...]
    quarantined: tuple[tuple[str, str], ...]  # (uid, reason)
    unknown: tuple[str, ...]
    answered: bool  # the transaction has no open instance left


def _txn(row: Any) -> Transaction:
    return Transaction(row["transaction_uid"], row["destination"], TransactionState(row["state"]), row["asks"],
                       row["created_at"], row["asked_at"], row["due_at"], row["last_error"])


class CommitmentBook:
    """The commitment transactions of a spool's queue (thread-safe; each write one transaction)."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue

    def open(self, transaction_uid: str, destination: str, uids: Sequence[str], now: float,
             due_at: float) -> list[tuple[str, str]]:
        """Record a new transaction for the sent, not yet asked-about `uids` of a destination;
        returns the (SOP Instance UID, SOP Class UID) pairs it asks about (none: not recorded)."""
        with self._queue.write() as db:
            db.execute("insert into commitments (transaction_uid, destination, state, asks, created_at, asked_at, "
                       "due_at, last_error, updated_at) values (?, ?, 'open', 0, ?, null, ?, null, ?)",
                       [transaction_uid, destination, now, due_at, now])
            db.conn.executemany("update deliveries set commit_txn = ? where sop_instance_uid = ? and destination = ? "
                           "and state = 'sent' and commit_txn is null",
                           [(transaction_uid, uid, destination) for uid in uids])
            items = self._items(db, transaction_uid)
            if not items:
                db.execute("delete from commitments where transaction_uid = ?", [transaction_uid])
        return items

    @staticmethod
    def _items(db: Any, transaction_uid: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in db.execute(
            "select d.sop_instance_uid, i.sop_class_uid from deliveries d join instances i "
            "on i.sop_instance_uid = d.sop_instance_uid where d.commit_txn = ? and d.state = 'sent' "
            "order by i.created_at", [transaction_uid])]

    def items(self, transaction_uid: str) -> list[tuple[str, str]]:
        """The instances a transaction still waits for: (SOP Instance UID, SOP Class UID)."""
        with self._queue.read() as db:
            return self._items(db, transaction_uid)

    def unasked(self, destination: str, limit: int) -> list[str]:
        """Sent deliveries of a destination that no transaction asks about yet (a crash between
        the C-STORE and the request, or commitment turned on later)."""
        with self._queue.read() as db:
            return [r[0] for r in db.execute(
                "select sop_instance_uid from deliveries where destination = ? and state = 'sent' "
                "and commit_txn is null order by updated_at limit ?", [destination, limit])]

    def transaction(self, transaction_uid: str) -> Transaction | None:
        with self._queue.read() as db:
            rows = list(db.query("select * from commitments where transaction_uid = ?", [transaction_uid]))
        return _txn(rows[0]) if rows else None

    def due(self, destination: str, now: float) -> list[Transaction]:
        """Open transactions of a destination whose report is overdue (or never asked)."""
        with self._queue.read() as db:
            return [_txn(r) for r in db.query(
                "select * from commitments where destination = ? and state = 'open' and due_at <= ? "
                "order by due_at", [destination, now])]

    def next_due(self, destination: str) -> float | None:
        with self._queue.read() as db:
            value = db.execute("select min(due_at) from commitments where destination = ? and state = 'open'",
                               [destination]).fetchone()[0]
        return None if value is None else float(value)

    def transactions(self, destination: str | None = None,
                     state: TransactionState | None = None) -> list[Transaction]:
        clauses, args = [], []
        if destination is not None:
            clauses.append("destination = ?")
            args.append(destination)
        if state is not None:
            clauses.append("state = ?")
            args.append(state.value)
        where = ("where " + " and ".join(clauses)) if clauses else ""
        with self._queue.read() as db:
            return [_txn(r) for r in db.query(f"select * from commitments {where} order by created_at", args)]

    def asked(self, transaction_uid: str, now: float, due_at: float, error: str | None) -> None:
        """One more request made (`error`: it did not reach the archive or was refused)."""
        with self._queue.write() as db:
            db.execute("update commitments set asks = asks + 1, asked_at = ?, due_at = ?, last_error = ?, "
                       "updated_at = ? where transaction_uid = ?",  # the report may come before the response
                       [now, due_at, error, now, transaction_uid])

    def give_up(self, transaction_uid: str, now: float, reason: str) -> None:
        """Asked as often as allowed: stop asking (a late report is still applied)."""
        with self._queue.write() as db:
            db.execute("update commitments set state = 'unanswered', last_error = ?, updated_at = ? "
                       "where transaction_uid = ? and state = 'open'", [reason, now, transaction_uid])

    def reopen(self, now: float) -> int:
        """After a restart: every open transaction is due now (its report may never come)."""
        with self._queue.write() as db:
            return int(db.execute("update commitments set due_at = ?, updated_at = ? where state = 'open' "
                                  "and due_at > ?", [now, now, now]).rowcount)

    def apply(self, transaction_uid: str, committed: Sequence[tuple[str, str]],
              failed: Sequence[tuple[str, str, str]], now: float) -> ReportOutcome | None:
        """Apply a report: `committed` (uid, SOP class), `failed` (uid, SOP class, reason), in ONE
        transaction. None when the transaction is unknown. Repeated reports change nothing more."""
        committed_uids: list[str] = []
        resend: list[str] = []
        quarantined: list[tuple[str, str]] = []
        unknown: list[str] = []
        with self._queue.write() as db:
            row = db.execute("select destination from commitments where transaction_uid = ?",
                             [transaction_uid]).fetchone()
            if row is None:
                return None
            dest = row[0]
            asked = {uid: (sop, failures) for uid, sop, failures in db.execute(
                "select d.sop_instance_uid, i.sop_class_uid, coalesce(d.commit_failures, 0) from deliveries d "
                "join instances i on i.sop_instance_uid = d.sop_instance_uid "
                "where d.commit_txn = ? and d.state = 'sent'", [transaction_uid])}
            for uid, sop in committed:
                if asked.get(uid, ("", 0))[0] != sop:
                    unknown.append(uid)
                    continue
                db.execute("update deliveries set state = 'committed', last_error = null, updated_at = ? "
                           "where sop_instance_uid = ? and destination = ?", [now, uid, dest])
                committed_uids.append(uid)
                del asked[uid]
            for uid, _sop, reason in failed:
                if uid not in asked:
                    unknown.append(uid)
                    continue
                failures = asked.pop(uid)[1]
                if failures == 0:
                    db.execute("update deliveries set state = 'pending', commit_txn = null, commit_failures = 1, "
                               "next_attempt_at = ?, last_error = ?, updated_at = ? "
                               "where sop_instance_uid = ? and destination = ?",
                               [now, f"archive reported storage commitment failed ({reason}); sent again once",
                                now, uid, dest])
                    resend.append(uid)
                else:
                    why = f"archive reported storage commitment failed again ({reason}) after it was sent again"
                    db.execute("update deliveries set state = 'quarantined', commit_failures = ?, last_error = ?, "
                               "updated_at = ? where sop_instance_uid = ? and destination = ?",
                               [failures + 1, why, now, uid, dest])
                    quarantined.append((uid, why))
            answered = not asked
            if answered:
                db.execute("update commitments set state = 'answered', updated_at = ? where transaction_uid = ?",
                           [now, transaction_uid])
        return ReportOutcome(dest, tuple(committed_uids), tuple(resend), tuple(quarantined), tuple(unknown),
                             answered)

    def counts(self) -> dict[tuple[str, str], int]:
        """(destination, transaction state) -> number of transactions."""
        with self._queue.read() as db:
            return {(d, s): n for d, s, n in db.execute(
                "select destination, state, count(*) from commitments group by destination, state")}
