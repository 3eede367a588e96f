"""The exams closed lately, kept in the state database so that the append case (IHE SWF: reopen
an exam to add views to its study) survives a daemon restart.

One row per study (table `closed_exams`): its order (the worklist item, patient data: the state
database is an owner-only file, and nothing of it is logged) and the last series number given.
The window is bounded: exams closed within KEEP_S, at most KEEP_MAX of them, the oldest go
first. A reopen reserves its series number at once, so a restart while it is open never gives
that number twice.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from gateway.durable import open_state_db
from gateway.types import WorklistItem
from gateway.worklist.cache import decode_item, encode_item

KEEP_S = 24 * 3600.0  # exams closed in the last day may be reopened
KEEP_MAX = 100  # ... at most this many, the newest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS closed_exams (
    study_uid TEXT PRIMARY KEY,
    item TEXT,
    series_number INTEGER NOT NULL,
    closed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS closed_exams_at ON closed_exams (closed_at);
"""


@dataclass(frozen=True)
class ClosedExam:
    study_uid: str
    item: WorklistItem | None  # None: an exam without patient
    series_number: int  # the last series number given in the study (a reopen adds the next)
    closed_at: float  # epoch seconds


class ClosedExams:
    """The closed exams that may be reopened, in `database` (thread-safe; each write committed)."""

    def __init__(self, database: Path, *, keep_s: float = KEEP_S, keep_max: int = KEEP_MAX,
                 busy_timeout_s: float = 5.0) -> None:
        self.keep_s, self.keep_max = keep_s, keep_max
        self._lock = threading.Lock()
        self._db = open_state_db(database, busy_timeout_s)
        with self._lock:
            self._db.executescript(_SCHEMA)

    def closed(self, study_uid: str, item: WorklistItem | None, series_number: int, now: float) -> None:
        """Record an exam closed at `now` (re-closed: newest again), then drop what left the window."""
        body = None if item is None else json.dumps(encode_item(item), ensure_ascii=False)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR REPLACE INTO closed_exams VALUES (?, ?, max(?, coalesce((SELECT "
                                 "series_number FROM closed_exams WHERE study_uid = ?), 0)), ?)",
                                 (study_uid, body, series_number, study_uid, now))
                self._db.execute("DELETE FROM closed_exams WHERE closed_at < ? OR study_uid NOT IN (SELECT study_uid "
                                 "FROM closed_exams ORDER BY closed_at DESC, rowid DESC LIMIT ?)",
                                 (now - self.keep_s, self.keep_max))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def reserve(self, study_uid: str, series_number: int) -> None:
        """A reopened exam takes `series_number`: kept at once, whatever happens before it closes."""
        with self._lock:
            self._db.execute("UPDATE closed_exams SET series_number = max(series_number, ?) WHERE study_uid = ?",
                             (series_number, study_uid))

    def get(self, study_uid: str, now: float) -> ClosedExam | None:
        """The exam of that study, if it was closed within the window."""
        return next((c for c in self.recent(now) if c.study_uid == study_uid), None)

    def recent(self, now: float) -> list[ClosedExam]:
        """The exams closed within the window, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT study_uid, item, series_number, closed_at FROM closed_exams WHERE "
                                    "closed_at >= ? ORDER BY closed_at, rowid", (now - self.keep_s,)).fetchall()
        rows = rows[-self.keep_max:] if self.keep_max > 0 else []
        return [ClosedExam(study_uid=str(uid), item=None if body is None else decode_item(json.loads(body)),
                           series_number=int(series), closed_at=float(at)) for uid, body, series, at in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
