"""Retention: when a spooled file may go (DESIGN.md invariant 4), and never to make room.

A file is deleted only when EVERY delivery of its instance is done with it:
- committed (the archive's storage commitment report said so), or
- sent to a destination without commitment, at least that destination's `age_s` ago.
A delivery that is pending, sending, quarantined, sent to a destination that commits but has
not committed yet, or bound for a destination no longer configured keeps the file.

The decision is committed first (instances.removed_at, in the same transaction that checks
the rule), then the file is unlinked; a crash between the two is finished at the next open.
The instance and delivery rows stay, as the record of what was sent and committed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.spool import files
from gateway.spool.queue import Queue

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    """Per configured destination: whether it commits, else how long after success to keep."""

    commits: frozenset[str] = frozenset()
    age_s: Mapping[str, float] = field(default_factory=dict)  # destinations without commitment


def removable_sql(policy: RetentionPolicy) -> tuple[str, list[object]]:
    """The query selecting (uid, path) of instances whose file may go at `:now`."""
    rows = [(name, 1, 0.0) for name in sorted(policy.commits)]
    rows += [(name, 0, float(age)) for name, age in sorted(policy.age_s.items()) if name not in policy.commits]
    values = ", ".join("(?, ?, ?)" for _ in rows) or "(null, null, null)"
    args: list[object] = [v for row in rows for v in row]
    sql = f"""
with policy(destination, commits, age) as (values {values})
select i.sop_instance_uid, i.path from instances i
where i.removed_at is null
  and exists (select 1 from deliveries d where d.sop_instance_uid = i.sop_instance_uid)
  and not exists (
    select 1 from deliveries d left join policy p on p.destination = d.destination
    where d.sop_instance_uid = i.sop_instance_uid
      and not (d.state = 'committed'  -- each term is never NULL: an unknown destination keeps the file
               or (d.state = 'sent' and coalesce(p.commits, 1) = 0 and coalesce(d.sent_at + p.age <= ?, 0))))
order by i.created_at limit ?"""
    return sql, args


def sweep(queue: Queue, root: Path, policy: RetentionPolicy, now: float, limit: int = 1000) -> list[str]:
    """Delete the files the policy lets go (at most `limit`); returns their SOP Instance UIDs."""
    sql, args = removable_sql(policy)
    with queue.write() as db:
        gone = [(r[0], r[1]) for r in db.execute(sql, [*args, now, limit])]
        db.conn.executemany("update instances set removed_at = ? where sop_instance_uid = ? and removed_at is null",
                       [(now, uid) for uid, _ in gone])
    for uid, rel in gone:
        files.remove(root / rel)
        LOGGER.info("spool file of %s removed: every destination is done with it", uid)
    return [uid for uid, _ in gone]
