"""Reject analysis and exposure-index statistics (AAPM TG-305, TG-151), kept per image.

Every image judged at the console (and every image an exam closed without a verdict, counted
as accepted, not reviewed) leaves one row: view, protocol, technologist, verdict with its TG-305
reason category, EI, target EI, DI and technique. No patient identifier is kept. Rows live in
their own SQLite file beside the state database; a later verdict on the same image replaces it.

`summary` groups by body part and view: images, rejects, reject rate and rejects per reason
(TG-305); EI median and mean, DI mean and standard deviation and the share within ±0.5 and
±1 (TG-151 / AAPM Report 116), over every image with an EI, rejected ones included.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sqlite3
import statistics
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from gateway.types import Anatomy, Exposure, ExposureIndex

REVIEW_FIELDS = ("sop_instance_uid", "exposed_at", "judged_at", "body_part", "view_position", "laterality",
                 "protocol", "technologist", "status", "reviewed", "reason", "ei", "target_ei", "di", "kvp", "mas")


@dataclass(frozen=True)
class ReviewRecord:
    """One image's verdict and exposure figures (no patient data)."""

    sop_instance_uid: str
    exposed_at: float  # epoch seconds
    judged_at: float
    body_part: str
    view_position: str
    laterality: str
    protocol: str
    technologist: str
    status: str  # accepted, rejected
    reviewed: bool  # False: the exam closed without a verdict (counted as accepted)
    reason: str  # the TG-305 category ("" when accepted)
    ei: float | None
    target_ei: float | None
    di: float | None
    kvp: float | None
    mas: float | None


@dataclass(frozen=True)
class ViewStats:
    body_part: str
    view_position: str
    images: int
    accepted: int
    rejected: int
    reject_rate_pct: float
    rejects_by_reason: dict[str, int]
    ei_count: int
    ei_median: float | None
    ei_mean: float | None
    di_mean: float | None
    di_sd: float | None
    di_within_05_pct: float | None  # |DI| <= 0.5 (target range)
    di_within_1_pct: float | None  # |DI| <= 1


class ReviewLog:
    """The review rows of one gateway, in `database` (thread-safe; each write one transaction)."""

    def __init__(self, database: Path) -> None:
        database.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(database, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(database, check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        columns = ", ".join(f"{f} {'text' if f in _TEXT else 'real'}" for f in REVIEW_FIELDS[1:])
        with self._lock, self._db:
            self._db.execute(f"create table if not exists reviews (sop_instance_uid text primary key, {columns})")

    def record(self, rec: ReviewRecord) -> None:
        row = asdict(rec)
        row["reviewed"] = 1.0 if rec.reviewed else 0.0
        names = ", ".join(REVIEW_FIELDS)
        marks = ", ".join(f":{f}" for f in REVIEW_FIELDS)
        with self._lock, self._db:
            self._db.execute(f"insert or replace into reviews ({names}) values ({marks})", row)

    def records(self, since: float | None = None, until: float | None = None) -> list[ReviewRecord]:
        """Rows whose exposure falls in [since, until), oldest first."""
        sql = f"select {', '.join(REVIEW_FIELDS)} from reviews where exposed_at >= ? and exposed_at < ? " \
              "order by exposed_at, sop_instance_uid"
        lo = -math.inf if since is None else since
        hi = math.inf if until is None else until
        with self._lock:
            rows = self._db.execute(sql, [lo, hi]).fetchall()
        return [ReviewRecord(**{**dict(zip(REVIEW_FIELDS, r, strict=True)), "reviewed": bool(r[9])}) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


_TEXT = {"sop_instance_uid", "body_part", "view_position", "laterality", "protocol", "technologist", "status",
         "reason"}


def summary(records: list[ReviewRecord]) -> list[ViewStats]:
    """Per body part and view (sorted): TG-305 reject figures and TG-151 EI/DI figures."""
    groups: dict[tuple[str, str], list[ReviewRecord]] = {}
    for rec in records:
        groups.setdefault((rec.body_part, rec.view_position), []).append(rec)
    out = []
    for (part, view), recs in sorted(groups.items()):
        rejected = [r for r in recs if r.status == "rejected"]
        reasons: dict[str, int] = {}
        for r in rejected:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        eis = [r.ei for r in recs if r.ei is not None]
        dis = [r.di for r in recs if r.di is not None]
        out.append(ViewStats(
            body_part=part, view_position=view, images=len(recs), accepted=len(recs) - len(rejected),
            rejected=len(rejected), reject_rate_pct=100.0 * len(rejected) / len(recs),
            rejects_by_reason=dict(sorted(reasons.items())), ei_count=len(eis),
            ei_median=statistics.median(eis) if eis else None, ei_mean=statistics.fmean(eis) if eis else None,
            di_mean=statistics.fmean(dis) if dis else None, di_sd=statistics.stdev(dis) if len(dis) > 1 else None,
            di_within_05_pct=100.0 * sum(abs(d) <= 0.5 for d in dis) / len(dis) if dis else None,
            di_within_1_pct=100.0 * sum(abs(d) <= 1.0 for d in dis) / len(dis) if dis else None))
    return out


def summary_csv(stats: list[ViewStats], reasons: list[str]) -> str:
    """The summary as CSV: one row per body part and view, one column per reject reason."""
    names = [f.name for f in fields(ViewStats) if f.name != "rejects_by_reason"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(names + [f"rejected_{r}" for r in reasons])
    for s in stats:
        row = asdict(s)
        w.writerow([_cell(row[n]) for n in names] + [s.rejects_by_reason.get(r, 0) for r in reasons])
    return buf.getvalue()


def records_csv(records: list[ReviewRecord]) -> str:
    """Every image's row as CSV (the TG-305 per-image export)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(REVIEW_FIELDS)
    for rec in records:
        row = asdict(rec)
        w.writerow([_cell(row[f]) for f in REVIEW_FIELDS])
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if math.isfinite(v) else ""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@"):  # no formula injection in a spreadsheet
        return "'" + v
    return v


def record_of(sop_instance_uid: str, exposure: Exposure, ei: ExposureIndex | None, anatomy: Anatomy, *,
              protocol: str, technologist: str, status: str, reviewed: bool, reason: str,
              judged_at: float) -> ReviewRecord:
    """The row of one judged image, from what the exam holds of it."""
    actual = exposure.actual
    return ReviewRecord(
        sop_instance_uid=sop_instance_uid, exposed_at=exposure.started_at.timestamp(), judged_at=judged_at,
        body_part=anatomy.body_part, view_position=anatomy.view_position, laterality=anatomy.laterality or "",
        protocol=protocol, technologist=technologist, status=status, reviewed=reviewed,
        reason=reason if status == "rejected" else "", ei=None if ei is None else ei.ei,
        target_ei=None if ei is None else ei.target_ei, di=None if ei is None else ei.deviation_index,
        kvp=actual.kvp if actual is not None and actual.kvp is not None else exposure.requested.kvp,
        mas=actual.mas if actual is not None and actual.mas is not None else exposure.requested.mas)
