"""MPPS messages wait in the state database until the RIS took them, in order per step.

Each message is one row, committed before the action it reports is shown done: a restart, a RIS
that is down or an association that breaks loses none. A step's N-SET leaves only after its
N-CREATE was accepted; a message the RIS refused stops its step (the later ones wait, an
operator sees why) instead of being retried forever.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from gateway.durable import open_state_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mpps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mpps_uid TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('create', 'set')),
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'refused')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS mpps_pending ON mpps (id) WHERE state = 'pending';
"""


@dataclass(frozen=True)
class MppsRecord:
    id: int
    mpps_uid: str
    kind: str
    dataset: Dataset
    state: str
    attempts: int
    next_attempt_at: float
    last_status: int | None
    last_error: str


class MppsQueue:
    def __init__(self, database: Path, *, busy_timeout_s: float = 5.0) -> None:
        self._db = open_state_db(database, busy_timeout_s)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.wake = threading.Event()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, mpps_uid: str, kind: str, ds: Dataset, now: float) -> int:
        """Durable once this returns (one committed INSERT, synchronous=FULL)."""
        with self._lock:
            cur = self._db.execute("INSERT INTO mpps (mpps_uid, kind, body, created_at) VALUES (?, ?, ?, ?)",
                                   (mpps_uid, kind, json.dumps(ds.to_json_dict()), now))
        self.wake.set()
        return int(cur.lastrowid or 0)

    def due(self, now: float) -> MppsRecord | None:
        """The oldest pending message that may go now: due, and first of its step (an earlier
        message of the same step not yet accepted holds it back)."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM mpps m WHERE state = 'pending' AND next_attempt_at <= ? AND NOT EXISTS "
                "(SELECT 1 FROM mpps e WHERE e.mpps_uid = m.mpps_uid AND e.id < m.id AND e.state != 'sent') "
                "ORDER BY id LIMIT 1", (now,)).fetchone()
        return None if row is None else _record(row)

    def next_due_at(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT min(next_attempt_at) FROM mpps WHERE state = 'pending'").fetchone()
        return None if row[0] is None else float(row[0])

    def sent(self, rid: int, status: int) -> None:
        self._set(rid, "sent", status, "", None)

    def refused(self, rid: int, status: int | None, error: str) -> None:
        self._set(rid, "refused", status, error, None)

    def retry_at(self, rid: int, when: float, error: str) -> None:
        self._set(rid, "pending", None, error, when)

    def _set(self, rid: int, state: str, status: int | None, error: str, when: float | None) -> None:
        with self._lock:
            self._db.execute("UPDATE mpps SET state = ?, last_status = coalesce(?, last_status), last_error = ?, "
                             "attempts = attempts + 1, next_attempt_at = coalesce(?, next_attempt_at) WHERE id = ?",
                             (state, status, error[:500], when, rid))

    def records(self, mpps_uid: str | None = None) -> list[MppsRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM mpps WHERE ? IS NULL OR mpps_uid = ? ORDER BY id",
                                    (mpps_uid, mpps_uid)).fetchall()
        return [_record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT state, count(*) FROM mpps GROUP BY state").fetchall())


def _record(row: tuple[Any, ...]) -> MppsRecord:
    rid, uid, kind, body, state, attempts, next_at, status, error, _ = row
    return MppsRecord(id=int(rid), mpps_uid=str(uid), kind=str(kind), dataset=Dataset.from_json(str(body)),
                      state=str(state), attempts=int(attempts), next_attempt_at=float(next_at),
                      last_status=None if status is None else int(status), last_error=str(error))
