"""The delivery queue: SQLite (WAL, synchronous=FULL) holding instances and their deliveries.

Retries are data: every (instance, destination) pair is one row with its state, attempt
count and the time it is next due, so a restart resumes exactly where the last run stopped.
"""

from __future__ import annotations

import enum
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from gateway.errors import SpoolError

LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SYNCHRONOUS_FULL = 2


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # waiting to be sent (due at next_attempt_at)
    SENDING = "sending"  # handed to an association; back to pending if the outcome is never recorded
    SENT = "sent"  # stored; for a destination with commitment, awaiting its commitment report
    COMMITTED = "committed"  # the archive committed to keep it (storage commitment)
    QUARANTINED = "quarantined"  # parked with a reason until an operator releases it
    WITHHELD = "withheld"  # rejected at the console before it left: never sent, the file kept


@dataclass(frozen=True)
class Delivery:
    """One instance bound for one destination, with its retry state and where its file is."""

    sop_instance_uid: str
    destination: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    last_status: int | None
    last_error: str | None
    updated_at: float
    sop_class_uid: str
    path: str  # absolute path of the spooled Part-10 file
    sha256: str
    size: int
    sent_at: float | None = None  # when the archive stored it
    commit_txn: str | None = None  # the storage commitment transaction asking for it
    commit_failures: int = 0  # times the archive reported its commitment failed
    xxh3_128: str | None = None  # fast digest checked before the file leaves (None: spooled before it was recorded)
    held_until: float | None = None  # held for the technologist's verdict until then (None: not held)


@dataclass(frozen=True)
class Backoff:
    """A destination that failed: how many times in a row, and when its backlog is next due."""

    destination: str
    failures: int
    retry_at: float
    last_error: str | None


_DELIVERY_SELECT = """
select d.sop_instance_uid, d.destination, d.state, d.attempts, d.next_attempt_at,
       d.last_status, d.last_error, d.updated_at, i.sop_class_uid, i.path, i.sha256, i.size,
       d.sent_at, d.commit_txn, d.commit_failures, i.xxh3_128, d.held_until
from deliveries d join instances i on i.sop_instance_uid = d.sop_instance_uid
"""


def _owner_only(database: Path) -> None:
    """Create the database file mode 0600 (SQLite gives its WAL and shm files the same mode);
    an existing one is made owner-only: it holds patient data."""
    fd = os.open(database, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Queue:
    """Thread-safe access to the state database; every write is one committed transaction."""

    def __init__(self, database: Path, root: Path, *, busy_timeout_s: float = 5.0) -> None:
        self._root = root
        self._lock = threading.Lock()
        _owner_only(database)
        # timeout= is SQLite's busy timeout: how long a write waits for another process's lock
        conn = sqlite3.connect(database, check_same_thread=False, timeout=busy_timeout_s)
        self._db = sqlite_utils.Database(conn)
        self._db.enable_wal()
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        journal = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = self._db.execute("PRAGMA synchronous").fetchone()[0]
        if journal != "wal" or synchronous != _SYNCHRONOUS_FULL:
            conn.close()
            raise SpoolError(f"{database}: journal_mode={journal}, synchronous={synchronous}; "
                             "the spool needs WAL with synchronous=FULL")
        self._create_schema()
        for suffix in ("-wal", "-shm"):  # SQLite gives them the database's mode; older ones may differ
            side = Path(f"{database}{suffix}")
            if side.exists():
                side.chmod(0o600)

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, begun IMMEDIATE: the write lock is taken at BEGIN, waiting up to
        the busy timeout for another writer, instead of failing at once on the first write
        (a deferred transaction that has read cannot wait for the lock)."""
        with self._lock:
            conn = self._db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT) for the spool's other books."""
        with self._write():
            yield self._db

    @contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        with self._lock:
            yield self._db

    def check_writable(self) -> None:
        """Take and release the write lock (within the busy timeout); sqlite3.Error if it cannot."""
        with self._write():
            pass

    def pragmas(self) -> dict[str, Any]:
        """journal_mode and synchronous as SQLite reports them (for health checks and tests)."""
        with self._lock:
            return {"journal_mode": self._db.execute("PRAGMA journal_mode").fetchone()[0],
                    "synchronous": self._db.execute("PRAGMA synchronous").fetchone()[0]}

    def _create_schema(self) -> None:
        with self._write():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise SpoolError(f"state database has schema version {version}; "
                                 f"this dxgate knows version {SCHEMA_VERSION}")
            self._db.table("instances").create({
                "sop_instance_uid": str, "sop_class_uid": str, "study_instance_uid": str,
                "accession_number": str, "path": str, "sha256": str, "size": int, "created_at": float,
            }, pk="sop_instance_uid", not_null={"sop_class_uid", "study_instance_uid", "accession_number",
                                                "path", "sha256", "size", "created_at"}, if_not_exists=True)
            self._db.table("deliveries").create({
                "sop_instance_uid": str, "destination": str, "state": str, "attempts": int,
                "next_attempt_at": float, "last_status": int, "last_error": str, "updated_at": float,
            }, pk=("sop_instance_uid", "destination"),
                not_null={"state", "attempts", "next_attempt_at", "updated_at"},
                foreign_keys=[("sop_instance_uid", "instances", "sop_instance_uid")], if_not_exists=True)
            self._db.table("deliveries").create_index(["destination", "state", "next_attempt_at"],
                                                     index_name="deliveries_due", if_not_exists=True)
            # A destination's backoff (added within schema version 1: older code ignores it)
            self._db.table("destinations").create({
                "name": str, "failures": int, "retry_at": float, "last_error": str, "updated_at": float,
            }, pk="name", not_null={"failures", "retry_at", "updated_at"}, if_not_exists=True)
            # Storage commitment and retention (added within schema version 1: older code ignores them)
            for table, column, kind in (("deliveries", "sent_at", float), ("deliveries", "commit_txn", str),
                                        ("deliveries", "commit_failures", int), ("instances", "removed_at", float),
                                        ("deliveries", "held_until", float), ("instances", "rejected_at", float),
                                        ("instances", "xxh3_128", str)):  # the fast digest; older rows: null
                if column not in self._db.table(table).columns_dict:
                    self._db.table(table).add_column(column, kind)
            self._db.table("commitments").create({
                "transaction_uid": str, "destination": str, "state": str, "asks": int, "created_at": float,
                "asked_at": float, "due_at": float, "last_error": str, "updated_at": float,
            }, pk="transaction_uid", not_null={"destination", "state", "asks", "created_at", "due_at", "updated_at"},
                if_not_exists=True)
            self._db.table("deliveries").create_index(["commit_txn"], index_name="deliveries_commit_txn",
                                                     if_not_exists=True)
            # the few rejected instances, looked up at each retry without scanning every instance
            self._db.execute("create index if not exists instances_rejected on instances (sop_instance_uid) "
                             "where rejected_at is not null")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # --- instances -------------------------------------------------------------------------

    def instance(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self._db.query("select * from instances where sop_instance_uid = ?", [uid]))
        return rows[0] if rows else None

    def insert_instance(self, row: dict[str, Any], destinations: Sequence[str], now: float,
                        held_until: float | None = None, unheld: Collection[str] = ()) -> None:
        """Insert an instance and its delivery rows in ONE transaction (`held_until`: held for
        review, except the rows to the `unheld` destinations)."""
        with self._write():
            self._db.table("instances").insert(row)
            self._insert_deliveries(row["sop_instance_uid"], [d for d in destinations if d not in unheld], now,
                                    held_until)
            self._insert_deliveries(row["sop_instance_uid"], [d for d in destinations if d in unheld], now)

    def add_deliveries(self, uid: str, destinations: Sequence[str], now: float) -> None:
        """Add delivery rows for destinations the instance does not have yet."""
        with self._write():
            self._insert_deliveries(uid, destinations, now)

    def _insert_deliveries(self, uid: str, destinations: Iterable[str], now: float,
                           held_until: float | None = None) -> None:
        """New rows join their destination's backoff: due at its retry time, not at once; a row
        held for review is due no earlier than `held_until`."""
        self._db.table("deliveries").insert_all(
            ({"sop_instance_uid": uid, "destination": d, "state": DeliveryState.PENDING.value,
              "attempts": 0, "next_attempt_at": max(now, self._retry_at(d), held_until or now), "last_status": None,
              "last_error": None, "updated_at": now, "held_until": held_until} for d in destinations), ignore=True)

    def release_held(self, uid: str, now: float) -> list[str]:
        """The instance was accepted: its rows still held for review are due now (or at their
        destination's retry time). Returns the destinations released."""
        with self._write():
            dests = [r[0] for r in self._db.execute(
                "select destination from deliveries where sop_instance_uid = ? and state = 'pending' "
                "and held_until > ?", [uid, now])]
            self._db.execute(
                "update deliveries set held_until = null, updated_at = :now, next_attempt_at = max(:now, "
                "coalesce((select retry_at from destinations where name = deliveries.destination), :now)) "
                "where sop_instance_uid = :uid and state = 'pending' and held_until > :now", {"uid": uid, "now": now})
        return dests

    def withhold(self, uid: str, reason: str, now: float) -> tuple[list[str], list[str]]:
        """The instance was rejected, in ONE transaction: every row that has not left (pending,
        quarantined) becomes 'withheld'. Returns (destinations withheld, destinations it left
        for or may have: sending, sent, committed)."""
        with self._write():
            rows = list(self._db.execute("select destination, state from deliveries where sop_instance_uid = ?",
                                         [uid]))
            self._db.execute("update deliveries set state = 'withheld', last_error = ?, updated_at = ? "
                             "where sop_instance_uid = ? and state in ('pending', 'quarantined')", [reason, now, uid])
            self._db.execute("update instances set rejected_at = coalesce(rejected_at, ?) where sop_instance_uid = ?",
                             [now, uid])
        held = [d for d, s in rows if s in ("pending", "quarantined", "withheld")]
        left = [d for d, s in rows if s in ("sending", "sent", "committed")]
        return held, left

    def _withhold_rejected(self, now: float) -> None:
        """Inside a write: rows of rejected instances that came back to pending or quarantined
        (a send in flight at the rejection failed, a crash left it 'sending', an operator's
        release) are withheld: a rejected image never leaves after its rejection."""
        self._db.execute(
            "update deliveries set state = 'withheld', last_error = 'rejected at review', updated_at = ? "
            "where state in ('pending', 'quarantined') and sop_instance_uid in "
            "(select sop_instance_uid from instances where rejected_at is not null)", [now])

    def _retry_at(self, destination: str) -> float:
        row = self._db.execute("select retry_at from destinations where name = ?", [destination]).fetchone()
        return float("-inf") if row is None else float(row[0])

    def paths(self) -> dict[str, str]:
        """Relative path -> SOP Instance UID, for every committed instance."""
        with self._lock:
            return {r["path"]: r["sop_instance_uid"] for r in self._db.query(
                "select path, sop_instance_uid from instances where removed_at is null")}

    def removed_paths(self) -> dict[str, str]:
        """Relative path -> SOP Instance UID of instances whose file retention removed."""
        with self._lock:
            return {r["path"]: r["sop_instance_uid"] for r in self._db.query(
                "select path, sop_instance_uid from instances where removed_at is not null")}

    # --- deliveries ------------------------------------------------------------------------

    def deliveries(self, uid: str) -> list[Delivery]:
        return self._select("where d.sop_instance_uid = ? order by d.destination", [uid])

    def due(self, destination: str, now: float, limit: int) -> list[Delivery]:
        return self._select(
            "where d.destination = ? and d.state = 'pending' and d.next_attempt_at <= ? "
            "order by d.next_attempt_at, i.created_at limit ?", [destination, now, limit])

    def next_attempt_at(self, destination: str | None) -> float | None:
        sql = "select min(next_attempt_at) from deliveries where state = 'pending'"
        args: list[Any] = []
        if destination is not None:
            sql += " and destination = ?"
            args.append(destination)
        with self._lock:
            value = self._db.execute(sql, args).fetchone()[0]
        return None if value is None else float(value)

    def listing(self, *, state: str | None, destination: str | None, limit: int) -> list[Delivery]:
        """Deliveries newest first, optionally of one state and/or destination (operator views)."""
        clauses, args = [], []
        if state is not None:
            clauses.append("d.state = ?")
            args.append(state)
        if destination is not None:
            clauses.append("d.destination = ?")
            args.append(destination)
        where = ("where " + " and ".join(clauses)) if clauses else ""
        return self._select(f"{where} order by i.created_at desc, d.destination limit ?", [*args, limit])

    def counts_by_destination(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return {(d, s): n for d, s, n in self._db.execute(
                "select destination, state, count(*) from deliveries group by destination, state")}

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in DeliveryState if s is not DeliveryState.WITHHELD}  # withheld: only when some are
        with self._lock:
            for state, n in self._db.execute("select state, count(*) from deliveries group by state"):
                out[state] = n
        return out

    def update(self, uid: str, destination: str, *, expect: Sequence[DeliveryState] | None,
               count_attempt: bool, **values: Any) -> None:
        """Update one delivery row; `expect` lists the states it may be in (None: any)."""
        sets = ", ".join(f"{k} = :{k}" for k in values)
        if count_attempt:
            sets += ", attempts = attempts + 1"
        sql = f"update deliveries set {sets} where sop_instance_uid = :uid and destination = :dest"
        params = {**values, "uid": uid, "dest": destination}
        if expect is not None:
            names = [f":s{i}" for i in range(len(expect))]
            sql += f" and state in ({', '.join(names)})"
            params.update({f"s{i}": s.value for i, s in enumerate(expect)})
        with self._write():
            changed = self._db.execute(sql, params).rowcount
            if values.get("state") in ("pending", "quarantined"):
                self._withhold_rejected(float(values.get("updated_at", time.time())))
        if changed != 1:
            states = "any state" if expect is None else "/".join(s.value for s in expect)
            raise SpoolError(f"no delivery of {uid} to {destination!r} in {states}")

    # --- destinations ----------------------------------------------------------------------

    def backoff(self, destination: str) -> Backoff | None:
        """The destination's backoff, None when it has none (it last answered, or never failed)."""
        with self._lock:
            row = self._db.execute("select failures, retry_at, last_error from destinations where name = ?",
                                   [destination]).fetchone()
        return None if row is None else Backoff(destination, int(row[0]), float(row[1]), row[2])

    def back_off(self, destination: str, attempted: Sequence[tuple[str, int | None, str]], retry_at: float,
                 error: str, now: float) -> list[str]:
        """In ONE transaction: count one more failure of the destination and give its whole
        pending backlog one retry time (rows due later keep their time); the `attempted`
        (uid, status, error) rows also count an attempt. Returns the attempted uids updated
        (rows no longer pending are left as they are)."""
        updated = []
        with self._write():
            for uid, status, why in attempted:
                changed = self._db.execute(
                    "update deliveries set state = 'pending', attempts = attempts + 1, last_status = ?, "
                    "last_error = ?, next_attempt_at = max(next_attempt_at, ?), updated_at = ? "
                    "where sop_instance_uid = ? and destination = ? and state in ('pending', 'sending')",
                    [status, why, retry_at, now, uid, destination]).rowcount
                if changed == 1:
                    updated.append(uid)
            self._db.execute(
                "update deliveries set next_attempt_at = ?, updated_at = ? "
                "where destination = ? and state = 'pending' and next_attempt_at < ?",
                [retry_at, now, destination, retry_at])
            self._db.execute(
                "insert into destinations (name, failures, retry_at, last_error, updated_at) values (?, 1, ?, ?, ?) "
                "on conflict(name) do update set failures = failures + 1, retry_at = excluded.retry_at, "
                "last_error = excluded.last_error, updated_at = excluded.updated_at",
                [destination, retry_at, error, now])
            self._withhold_rejected(now)
        return updated

    def release_destination(self, destination: str, now: float) -> int:
        """End the destination's backoff: every pending row it held (due later than `now`, but
        not later than its retry time) becomes due at `now`. Returns how many were released."""
        with self._lock:
            held = self._db.execute("select retry_at from destinations where name = ?", [destination]).fetchone()
        if held is None:
            return 0
        with self._write():
            released = self._db.execute(
                "update deliveries set next_attempt_at = ?, updated_at = ? where destination = ? "
                "and state = 'pending' and next_attempt_at > ? and next_attempt_at <= "
                "(select retry_at from destinations where name = ?) and coalesce(held_until, ?) <= ?",
                [now, now, destination, now, destination, now, now]).rowcount
            self._db.execute("delete from destinations where name = ?", [destination])
        return int(released)

    def _select(self, where: str, args: list[Any]) -> list[Delivery]:
        with self._lock:
            rows = list(self._db.query(_DELIVERY_SELECT + where, args))
        return [Delivery(
            sop_instance_uid=r["sop_instance_uid"], destination=r["destination"],
            state=DeliveryState(r["state"]), attempts=r["attempts"],
            next_attempt_at=r["next_attempt_at"], last_status=r["last_status"],
            last_error=r["last_error"], updated_at=r["updated_at"], sop_class_uid=r["sop_class_uid"],
            path=str(self._root / r["path"]), sha256=r["sha256"], size=r["size"], sent_at=r["sent_at"],
            commit_txn=r["commit_txn"], commit_failures=r["commit_failures"] or 0, xxh3_128=r["xxh3_128"],
            held_until=r["held_until"]) for r in rows]

    def mark_sending(self, destination: str, uids: Sequence[str], now: float) -> None:
        """Pending rows handed to an association, in one transaction."""
        with self._write():
            self._db.conn.executemany(
                "update deliveries set state = 'sending', updated_at = ? "
                "where sop_instance_uid = ? and destination = ? and state = 'pending'",
                [(now, uid, destination) for uid in uids])

    def unsend(self, destination: str | None, uids: Sequence[str] | None) -> int:
        """Rows left 'sending' (never answered, or a crash) become pending again, due as they were."""
        sql = "update deliveries set state = 'pending' where state = 'sending'"
        with self._write():
            if uids is None:
                args: list[Any] = []
                if destination is not None:
                    sql += " and destination = ?"
                    args.append(destination)
                changed = int(self._db.execute(sql, args).rowcount)
            else:
                sql += " and destination = ? and sop_instance_uid = ?"
                changed = sum(int(self._db.execute(sql, [destination, uid]).rowcount) for uid in uids)
            self._withhold_rejected(time.time())
            return changed

    def close(self) -> None:
        with self._lock:
            self._db.close()
