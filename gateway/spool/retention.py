"""Retention: when a spooled file may go (DESIGN.md invariant 4), and never to make room.

A file is deleted only when EVERY delivery of its instance is done with it:
- committed (the archive's storage commitment report said so), or
- sent to a destination without commitment, at least that destination's `age_s` ago.
A delivery that is pending, sending, quarantined, sent to a destination that commits but has
not committed yet, or bound for a destination no longer configured keeps the file.

A rejected instance (judged at the console: not clinical) is kept for reject analysis,
`keep_rejected_s` after its rejection, however done its deliveries are; then its file goes
once none of them can still leave: each is withheld (rejected or purged) or done as above
(0: kept forever). Its reject-analysis record lives elsewhere (gateway.review_stats) and stays.

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


def _policy_values(policy: RetentionPolicy) -> tuple[str, dict[str, object]]:
    """The policy as SQL VALUES rows (destination, commits, age) and their named parameters."""
    rows = [(name, 1, 0.0) for name in sorted(policy.commits)]
    rows += [(name, 0, float(age)) for name, age in sorted(policy.age_s.items()) if name not in policy.commits]
    values = ", ".join(f"(:d{n}, :c{n}, :a{n})" for n in range(len(rows))) or "(null, null, null)"
    params: dict[str, object] = {}
    for n, (name, commits, age) in enumerate(rows):
        params.update({f"d{n}": name, f"c{n}": commits, f"a{n}": age})
    return values, params


# A delivery done with its file (each term is never NULL: an unknown destination keeps the file).
_DONE = """(d.state = 'committed'
               or (d.state = 'sent' and coalesce(p.commits, 1) = 0 and coalesce(d.sent_at + p.age <= :now, 0)))"""


def removable_sql(policy: RetentionPolicy, *, rejected: bool = False) -> tuple[str, dict[str, object]]:
    """The query selecting (uid, path) of instances whose file may go at `:now` (at most
    `:limit`): not rejected, every delivery done; with `rejected`, rejected at or before
    `:rejected_by`, every delivery withheld or done."""
    values, params = _policy_values(policy)
    done = f"(d.state = 'withheld' or {_DONE})" if rejected else _DONE
    which = "i.rejected_at <= :rejected_by" if rejected else "i.rejected_at is null"
    sql = f"""
with policy(destination, commits, age) as (values {values})
select i.sop_instance_uid, i.path from instances i
where i.removed_at is null and {which}
  and exists (select 1 from deliveries d where d.sop_instance_uid = i.sop_instance_uid)
  and not exists (
    select 1 from deliveries d left join policy p on p.destination = d.destination
    where d.sop_instance_uid = i.sop_instance_uid and not {done})
order by i.created_at limit :limit"""
    return sql, params


def sweep(queue: Queue, root: Path, policy: RetentionPolicy, now: float, limit: int = 1000) -> list[str]:
    """Delete the files the policy lets go (at most `limit`); returns their SOP Instance UIDs."""
    sql, params = removable_sql(policy)
    gone = _remove(queue, root, sql, {**params, "now": now, "limit": limit}, now)
    for uid in gone:
        LOGGER.info("spool file of %s removed: every destination is done with it", uid)
    return gone


def sweep_rejected(queue: Queue, root: Path, policy: RetentionPolicy, keep_s: float, now: float,
                   limit: int = 1000) -> list[str]:
    """Delete the files of instances rejected at least `keep_s` ago that can no longer leave
    (at most `limit`); returns their SOP Instance UIDs."""
    sql, params = removable_sql(policy, rejected=True)
    gone = _remove(queue, root, sql, {**params, "now": now, "limit": limit, "rejected_by": now - keep_s}, now)
    for uid in gone:
        LOGGER.info("spool file of rejected %s removed: kept its %g days for reject analysis", uid, keep_s / 86400)
    return gone


def _remove(queue: Queue, root: Path, sql: str, params: dict[str, object], now: float) -> list[str]:
    """Commit the decision for the rows `sql` selects, then unlink their files."""
    with queue.write() as db:
        gone = [(r[0], r[1]) for r in db.execute(sql, params)]
        db.conn.executemany("update instances set removed_at = ? where sop_instance_uid = ? and removed_at is null",
                            [(now, uid) for uid, _ in gone])
    for _uid, rel in gone:
        files.remove(root / rel)
    return [uid for uid, _ in gone]
