"""The durability point: an exposure is 'saved' once `Spool.put` returns.

`put` makes the Part-10 file durable first (temp file, fsync, rename, directory fsync), then
commits the instance row and its delivery rows in one transaction. A crash before the
commit leaves at most an unreferenced file, which the next start reports and never uses.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import SpoolError
from gateway.spool import files, retention
from gateway.spool.commitments import CommitmentBook
from gateway.spool.queue import Backoff, Delivery, DeliveryState, Queue
from gateway.spool.retention import RetentionPolicy
from gateway.types import SpooledInstance
from gateway.uids import is_valid_uid

LOGGER = logging.getLogger(__name__)

_UNSETTLED = (DeliveryState.PENDING, DeliveryState.SENDING)  # states an attempt's outcome is recorded from

DEFAULT_MIN_FREE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class RecoveryReport:
    """What opening the spool found on disk beyond the committed state."""

    removed_temp_files: tuple[str, ...]  # half-written files from a crash, deleted
    unreferenced_files: tuple[str, ...]  # complete files with no committed row: reported, never used
    missing_files: tuple[str, ...]  # committed instances whose file is gone (pending ones quarantined)


class Spool:
    """Spooled DICOM files under `directory` and their delivery queue in `database`."""

    def __init__(self, directory: Path, database: Path, *, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
                 clock: Callable[[], float] = time.time, busy_timeout_s: float = 5.0) -> None:
        if min_free_bytes < 0:
            raise SpoolError(f"min_free_bytes must be >= 0, got {min_free_bytes}")
        self.directory = Path(directory)
        self.min_free_bytes = min_free_bytes
        self._clock = clock
        self._put_lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        self.database = Path(database)
        self._queue = Queue(self.database, self.directory, busy_timeout_s=busy_timeout_s)
        self.commitments = CommitmentBook(self._queue)  # storage commitment transactions
        self._review_hold: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._unheld: Callable[[], Collection[str]] = frozenset  # destinations that take images at once
        self.keep_rejected_s = 0.0  # a rejected instance's file is deleted this long after rejection (0: kept)
        self.rejected_files_removed = 0  # rejected instances' files deleted by retention (a metric)
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dxgate-spool-hash")
        self.recovery = self._recover()

    # --- the durability point --------------------------------------------------------------

    def put(self, data: bytes, *, sop_instance_uid: str, sop_class_uid: str, study_instance_uid: str,
            accession_number: str, destinations: Sequence[str]) -> SpooledInstance:
        """Make an instance durable and queue it for every destination; return when saved.

        A re-put of the same UID with identical bytes is idempotent (and adds any new
        destinations); with different bytes it is refused, since identity is assigned once.
        A delivery to a destination that is backing off joins its backlog: due at its retry time.
        """
        for name, uid in (("SOP Instance UID", sop_instance_uid), ("SOP Class UID", sop_class_uid),
                          ("Study Instance UID", study_instance_uid)):
            _check_uid(name, uid)
        if not data:
            raise SpoolError(f"{sop_instance_uid}: refusing to spool an empty object")
        if len(data) < 132 or data[128:132] != b"DICM":
            raise SpoolError(f"{sop_instance_uid}: data is not a DICOM Part-10 file (no DICM prefix)")
        dests = tuple(dict.fromkeys(destinations))
        if not dests or any(not d for d in dests):
            raise SpoolError(f"{sop_instance_uid}: at least one non-empty destination is required")
        rel = files.relative_path(sop_instance_uid)
        with self._put_lock:
            now = self._clock()
            existing = self._queue.instance(sop_instance_uid)
            if existing is not None:
                digest = files.sha256_hex(data)
                if existing["sha256"] != digest:
                    raise SpoolError(f"{sop_instance_uid} is already spooled with different content "
                                     f"(sha256 {existing['sha256'][:12]}… vs {digest[:12]}…); "
                                     "a changed object needs a new SOP Instance UID")
                self._queue.add_deliveries(sop_instance_uid, dests, now)
                LOGGER.info("re-put of %s is idempotent", sop_instance_uid)
                return self._spooled(existing)
            self._guard_space(sop_instance_uid, len(data))
            path = self.directory / rel
            # the content's identity is hashed while the file is written and fsynced (hashlib lets
            # go of the GIL): 19 MB of sha256 no longer stands between a new image and its save
            hashing = self._hasher.submit(files.sha256_hex, data)
            try:
                files.write_atomic(path, data)
            finally:
                digest = hashing.result()
            row = {"sop_instance_uid": sop_instance_uid, "sop_class_uid": sop_class_uid,
                   "study_instance_uid": study_instance_uid, "accession_number": accession_number,
                   "path": rel.as_posix(), "sha256": digest, "size": len(data), "created_at": now,
                   "xxh3_128": files.fast_digest(data)}  # what a send checks the file against
            hold_s, held_classes = self._review_hold
            held_until = now + hold_s if hold_s > 0 and sop_class_uid in held_classes else None
            try:
                self._queue.insert_instance(row, dests, now, held_until,
                                            unheld=self._unheld() if held_until is not None else ())
            except sqlite3.Error as exc:
                path.unlink(missing_ok=True)  # no row refers to it: it was never saved
                raise SpoolError(f"{sop_instance_uid}: queue commit failed, NOT saved: {exc}") from exc
        LOGGER.info("spooled %s (%d bytes) for %s", sop_instance_uid, len(data), ", ".join(dests))
        return self._spooled(row)

    # --- review: held until accepted, withheld when rejected ----------------------------------

    def now(self) -> float:
        """The spool's clock (what due times and holds are compared with)."""
        return self._clock()

    def hold_for_review(self, hold_s: float, sop_classes: frozenset[str],
                        unheld: Callable[[], Collection[str]] = frozenset) -> None:
        """From now on, new instances of `sop_classes` are held `hold_s` seconds (0: not held) for
        the technologist's verdict before any destination gets them; then they go as accepted.
        `unheld()`, asked at each put, names the destinations that get them at once."""
        if hold_s < 0:
            raise SpoolError(f"hold_s must be >= 0, got {hold_s}")
        self._review_hold = (float(hold_s), frozenset(sop_classes))
        self._unheld = unheld

    def release_held(self, uid: str, now: float | None = None) -> list[str]:
        """Accepted: the instance's deliveries still held are due now; returns their destinations."""
        return self._queue.release_held(uid, self._clock() if now is None else now)

    def withhold(self, uid: str, reason: str, now: float | None = None) -> tuple[list[str], list[str]]:
        """Rejected: every delivery of the instance that has not left is withheld for good (the
        file is kept for reject analysis, `keep_rejected_s`). Returns (destinations withheld, destinations it
        already left for or is leaving for — only a rejection note can reach those)."""
        held, left = self._queue.withhold(uid, reason, self._clock() if now is None else now)
        LOGGER.info("%s rejected: withheld from %s; already left for %s", uid, ", ".join(held) or "none",
                    ", ".join(left) or "none")
        return held, left

    def check_room(self, size: int) -> None:
        """Raise SpoolError unless an object of `size` bytes fits above the free-space minimum."""
        self._guard_space("the next image", size)

    def check_writable(self) -> None:
        """Raise SpoolError unless the state database's write lock can be taken now (within the
        busy timeout): called before the tube fires, so a database another process holds
        refuses the exposure instead of the image after the dose."""
        try:
            self._queue.check_writable()
        except sqlite3.Error as exc:
            raise SpoolError(f"state database {self.database} cannot be written: {exc}") from exc

    def _guard_space(self, uid: str, size: int) -> None:
        free = files.free_bytes(self.directory)
        if free - size < self.min_free_bytes:
            LOGGER.error("spool disk nearly full: %d bytes free, refusing %s", free, uid)
            raise SpoolError(f"spool disk {self.directory} has {free} bytes free; storing {uid} "
                             f"({size} bytes) would leave less than the minimum {self.min_free_bytes}; "
                             "acquisition refused until space is freed")

    # --- the queue -------------------------------------------------------------------------

    def due(self, destination: str, now: float, limit: int = 100) -> list[Delivery]:
        """Pending deliveries to `destination` whose next attempt is due at `now`, oldest first."""
        if limit < 1:
            raise SpoolError(f"limit must be >= 1, got {limit}")
        return self._queue.due(destination, now, limit)

    def mark_sent(self, uid: str, destination: str, status: int, now: float, warning: str | None = None) -> None:
        """Stored; `warning` records what a warning status said (kept as the row's last_error)."""
        self._queue.update(uid, destination, expect=_UNSETTLED, count_attempt=True,
                           state=DeliveryState.SENT.value, last_status=status, last_error=warning,
                           updated_at=now, sent_at=now, commit_txn=None)

    def mark_retry(self, uid: str, destination: str, status: int | None, error: str,
                   next_attempt_at: float, now: float) -> None:
        self._queue.update(uid, destination, expect=_UNSETTLED, count_attempt=True,
                           state=DeliveryState.PENDING.value, last_status=status, last_error=error,
                           next_attempt_at=next_attempt_at, updated_at=now)

    def mark_sending(self, destination: str, uids: Sequence[str], now: float) -> None:
        """Pending deliveries handed to an association (state 'sending', one transaction)."""
        self._queue.mark_sending(destination, uids, now)

    def unsend(self, destination: str | None = None, uids: Sequence[str] | None = None) -> int:
        """Deliveries still 'sending' (of `uids`, of a destination, or all) are pending again, due
        as they were: their outcome was never recorded, so the same UID is sent again."""
        n = self._queue.unsend(destination, uids)
        if n and uids is None:
            LOGGER.warning("%d deliveries were being sent when the last run ended; pending again", n)
        return n

    def backoff(self, destination: str) -> Backoff | None:
        """The destination's backoff (consecutive failures, retry time), None when it has none."""
        return self._queue.backoff(destination)

    def back_off(self, destination: str, attempted: Sequence[tuple[str, int | None, str]], retry_at: float,
                 error: str, now: float) -> list[str]:
        """The destination failed: one more failure, and ONE retry time for its whole pending
        backlog, committed at once; rows spooled later join it (see `put`). `attempted` lists
        the (uid, status, error) of the deliveries this attempt was for; they count an attempt.
        Returns those still pending and updated."""
        return self._queue.back_off(destination, attempted, retry_at, error, now)

    def release_destination(self, destination: str, now: float) -> int:
        """The destination answered again: its whole held backlog is due at `now`."""
        released = self._queue.release_destination(destination, now)
        if released:
            LOGGER.info("%s answers again: %d waiting deliveries released", destination, released)
        return released

    def quarantine(self, uid: str, destination: str, status: int | None, reason: str, now: float) -> None:
        """Park a delivery until an operator releases it; `reason` says why."""
        self._queue.update(uid, destination, expect=_UNSETTLED, count_attempt=True,
                           state=DeliveryState.QUARANTINED.value, last_status=status,
                           last_error=reason, updated_at=now)
        LOGGER.error("quarantined %s for %s: %s", uid, destination, reason)

    def release(self, uid: str, destination: str, now: float | None = None) -> None:
        """Operator retry: a quarantined delivery becomes pending and due at once."""
        t = self._clock() if now is None else now
        self._queue.update(uid, destination, expect=(DeliveryState.QUARANTINED,), count_attempt=False,
                           state=DeliveryState.PENDING.value, next_attempt_at=t, updated_at=t)
        LOGGER.info("released %s for %s from quarantine", uid, destination)

    def purge(self, uid: str, destination: str, reason: str, now: float | None = None) -> None:
        """Operator: a quarantined or pending delivery is given up for good (state 'withheld',
        the reason kept); the file stays in the spool, where retention never removes it."""
        if not reason.strip():
            raise SpoolError("purging a delivery needs a reason")
        t = self._clock() if now is None else now
        self._queue.update(uid, destination, expect=(DeliveryState.QUARANTINED, DeliveryState.PENDING),
                           count_attempt=False, state=DeliveryState.WITHHELD.value,
                           last_error=f"purged by the operator: {reason.strip()}", updated_at=t)
        LOGGER.warning("purged %s for %s: it will not be sent there", uid, destination)

    def retry_now(self, uid: str, destination: str, now: float | None = None) -> None:
        """Operator retry: a pending delivery waiting out a backoff becomes due at once; one held
        for the technologist's verdict stays held (accepting it, or the hold's end, sends it)."""
        t = self._clock() if now is None else now
        held = max((d.held_until or t for d in self._queue.deliveries(uid) if d.destination == destination), default=t)
        self._queue.update(uid, destination, expect=(DeliveryState.PENDING,), count_attempt=False,
                           next_attempt_at=max(t, held), updated_at=t)
        if held > t:
            LOGGER.info("retry of %s for %s requested; it stays held for review for %.0f s", uid, destination, held - t)
        else:
            LOGGER.info("retry of %s for %s requested", uid, destination)

    def deliveries(self, uid: str) -> list[Delivery]:
        return self._queue.deliveries(uid)

    def retain(self, policy: RetentionPolicy, now: float | None = None, limit: int = 1000) -> list[str]:
        """Delete the spool files every destination is done with, and those of instances rejected
        `keep_rejected_s` ago that can no longer leave (see gateway.spool.retention); returns their
        SOP Instance UIDs. Never called to make room."""
        t = self._clock() if now is None else now
        gone = retention.sweep(self._queue, self.directory, policy, t, limit)
        if self.keep_rejected_s > 0:
            rejected = retention.sweep_rejected(self._queue, self.directory, policy, self.keep_rejected_s, t, limit)
            self.rejected_files_removed += len(rejected)
            gone += rejected
        return gone

    def removed(self, uid: str) -> bool:
        """Whether retention deleted the instance's file."""
        row = self._queue.instance(uid)
        return row is not None and row.get("removed_at") is not None

    def listing(self, *, state: str | None = None, destination: str | None = None, limit: int = 100) -> list[Delivery]:
        """Deliveries newest first, filtered by state and/or destination."""
        if state is not None and state not in {s.value for s in DeliveryState}:
            raise SpoolError(f"unknown delivery state {state!r} (known: {', '.join(s.value for s in DeliveryState)})")
        return self._queue.listing(state=state, destination=destination, limit=max(1, min(limit, 10_000)))

    def counts_by_destination(self) -> dict[tuple[str, str], int]:
        """(destination, state) -> number of deliveries."""
        return self._queue.counts_by_destination()

    def next_attempt_at(self, destination: str | None = None) -> float | None:
        """Earliest next_attempt_at among pending deliveries (None: nothing pending)."""
        return self._queue.next_attempt_at(destination)

    def counts(self) -> dict[str, int]:
        """Number of deliveries per state (every state present, zero included; "withheld" once any is)."""
        return self._queue.counts()

    def instance(self, uid: str) -> SpooledInstance | None:
        row = self._queue.instance(uid)
        return None if row is None else self._spooled(row)

    def pragmas(self) -> dict[str, object]:
        return self._queue.pragmas()

    def close(self) -> None:
        self._hasher.shutdown(wait=True)
        self._queue.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------------

    def _spooled(self, row: dict) -> SpooledInstance:
        uid = row["sop_instance_uid"]
        return SpooledInstance(
            sop_instance_uid=uid, sop_class_uid=row["sop_class_uid"],
            study_instance_uid=row["study_instance_uid"], accession_number=row["accession_number"],
            path=str(self.directory / row["path"]), sha256=row["sha256"], size=row["size"],
            xxh3_128=row.get("xxh3_128"), destinations=tuple(d.destination for d in self._queue.deliveries(uid)))

    def _recover(self) -> RecoveryReport:
        removed = files.remove_temp_files(self.directory)
        for tmp in removed:
            LOGGER.warning("removed half-written spool file %s (never acknowledged)", tmp)
        committed = self._queue.paths()
        on_disk = {p.as_posix() for p in files.spooled_files(self.directory)}
        for rel in sorted(on_disk & self._queue.removed_paths().keys()):
            files.remove(self.directory / rel)  # retention decided, a crash came before the unlink
            on_disk.discard(rel)
            LOGGER.info("finished removing retained-out spool file %s", rel)
        unreferenced = sorted(on_disk - committed.keys())
        for rel in unreferenced:
            LOGGER.warning("spool file %s has no committed queue row; it is not forwarded", rel)
        missing = sorted(committed.keys() - on_disk)
        now = self._clock()
        for rel in missing:
            uid = committed[rel]
            for d in self._queue.deliveries(uid):
                if d.state in _UNSETTLED:
                    self.quarantine(uid, d.destination, None, f"spool file {rel} is missing", now)
        return RecoveryReport(tuple(str(p) for p in removed), tuple(unreferenced), tuple(missing))


def _check_uid(name: str, uid: str) -> None:
    if not is_valid_uid(uid):
        raise SpoolError(f"{name} {uid!r} is not a valid DICOM UID")
