"""What each queue transition writes, row by row (found by mutation testing of gateway/spool).

Every state change records when it happened, is refused from a state it may not leave, and
the due times read back exactly: the forwarder's sleep and the operator's views depend on them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import SpoolError
from gateway.spool import Delivery, DeliveryState, Spool
from tests.spool.objects import Clock, make_object, put


def row(spool: Spool, uid: str, dest: str) -> object:
    [d] = [d for d in spool.deliveries(uid) if d.destination == dest]
    return d


def test_next_attempt_at_per_destination_and_overall(spool: Spool, clock: Clock) -> None:
    assert spool.next_attempt_at() is None and spool.next_attempt_at("pacs") is None
    a, b = make_object(seed=1), make_object(seed=2)
    put(spool, a, ("pacs", "backup"))
    clock.t = 1005.0
    put(spool, b, ("pacs",))
    spool.mark_retry(a.sop_instance_uid, "pacs", 0xA700, "busy", next_attempt_at=1100.0, now=1006.0)
    spool.mark_retry(b.sop_instance_uid, "pacs", None, "down", next_attempt_at=1200.0, now=1006.0)
    assert spool.next_attempt_at("pacs") == 1100.0
    assert spool.next_attempt_at("backup") == 1000.0  # a's backup row is due since it was put
    assert spool.next_attempt_at() == 1000.0
    assert isinstance(spool.next_attempt_at(), float)
    spool.mark_sent(a.sop_instance_uid, "backup", 0, now=1007.0)
    assert spool.next_attempt_at() == 1100.0  # sent rows are not waiting


def test_every_transition_records_its_time_status_and_reason(spool: Spool, clock: Clock) -> None:
    obj = make_object(seed=3)
    uid = obj.sop_instance_uid
    put(spool, obj, ("pacs", "backup", "third"))
    spool.mark_retry(uid, "pacs", 0xA700, "out of resources", next_attempt_at=1050.0, now=1010.0)
    d = row(spool, uid, "pacs")
    assert (d.state, d.attempts, d.last_status, d.last_error, d.next_attempt_at, d.updated_at) == (
        DeliveryState.PENDING, 1, 0xA700, "out of resources", 1050.0, 1010.0)
    spool.mark_sent(uid, "pacs", 0xB000, now=1060.0)
    d = row(spool, uid, "pacs")
    assert (d.state, d.attempts, d.last_status, d.last_error, d.updated_at) == (
        DeliveryState.SENT, 2, 0xB000, None, 1060.0)
    spool.quarantine(uid, "backup", 0xC000, "refused", now=1070.0)
    d = row(spool, uid, "backup")
    assert (d.state, d.attempts, d.last_status, d.last_error, d.updated_at) == (
        DeliveryState.QUARANTINED, 1, 0xC000, "refused", 1070.0)
    clock.t = 1080.0
    spool.release(uid, "backup")
    d = row(spool, uid, "backup")
    assert (d.state, d.attempts, d.next_attempt_at, d.updated_at) == (DeliveryState.PENDING, 1, 1080.0, 1080.0)
    spool.mark_retry(uid, "third", None, "down", next_attempt_at=5000.0, now=1090.0)
    clock.t = 1095.0
    spool.retry_now(uid, "third")
    d = row(spool, uid, "third")
    assert (d.next_attempt_at, d.updated_at, d.attempts) == (1095.0, 1095.0, 1)


def test_a_row_cannot_leave_a_state_it_is_not_in(spool: Spool) -> None:
    obj = make_object(seed=4)
    uid = obj.sop_instance_uid
    put(spool, obj)
    spool.mark_sent(uid, "pacs", 0, now=1001.0)
    for act in (lambda: spool.mark_sent(uid, "pacs", 0, now=1002.0),
                lambda: spool.mark_retry(uid, "pacs", None, "x", next_attempt_at=1.0, now=1002.0),
                lambda: spool.quarantine(uid, "pacs", None, "x", now=1002.0),
                lambda: spool.release(uid, "pacs"),
                lambda: spool.retry_now(uid, "pacs")):
        with pytest.raises(SpoolError, match=f"no delivery of {uid} to 'pacs' in "):
            act()
    d = row(spool, uid, "pacs")
    assert (d.state, d.attempts, d.updated_at) == (DeliveryState.SENT, 1, 1001.0)  # untouched


def test_the_database_runs_in_wal_with_full_sync(spool: Spool) -> None:
    assert spool.pragmas() == {"journal_mode": "wal", "synchronous": 2}


def test_counts_and_listing(spool: Spool) -> None:
    a, b = make_object(seed=5), make_object(seed=6)
    put(spool, a, ("pacs", "backup"))
    put(spool, b, ("pacs",))
    spool.quarantine(b.sop_instance_uid, "pacs", 0xC000, "refused", now=1001.0)
    assert spool.counts() == {"pending": 2, "sending": 0, "sent": 0, "committed": 0, "quarantined": 1}
    assert spool.counts_by_destination() == {("backup", "pending"): 1, ("pacs", "pending"): 1,
                                             ("pacs", "quarantined"): 1}
    assert [d.sop_instance_uid for d in spool.listing(state="quarantined")] == [b.sop_instance_uid]
    assert {d.destination for d in spool.listing(destination="pacs")} == {"pacs"}
    with pytest.raises(SpoolError, match="unknown delivery state 'lost'"):
        spool.listing(state="lost")


def _row(spool: Spool, uid: str, dest: str) -> Delivery:
    [d] = [d for d in spool.deliveries(uid) if d.destination == dest]
    return d

def test_a_destination_backoff_is_one_time_for_its_backlog_joined_by_new_rows_and_released_at_once(
        spool: Spool, clock: Clock, tmp_path: Path) -> None:
    a, b, c = (put(spool, make_object(16, 16, seed=s), ("pacs", "other")).sop_instance_uid for s in (1, 2, 3))
    spool.mark_retry(c, "pacs", 0x0110, "own retry", 5000.0, clock.t)  # an object waiting on its own, later
    assert spool.back_off("pacs", [(a, None, "refused")], 1100.0, "refused", clock.t) == [a]
    assert spool.back_off("pacs", [(c, None, "x")], 1100.0, "refused", clock.t) == [c]  # pending: counted
    assert [_row(spool, u, "pacs").next_attempt_at for u in (a, b, c)] == [1100.0, 1100.0, 5000.0]
    assert [_row(spool, u, "pacs").attempts for u in (a, b, c)] == [1, 0, 2]
    assert _row(spool, a, "pacs").last_error == "refused"
    assert {_row(spool, u, "other").next_attempt_at for u in (a, b, c)} == {1000.0}
    backoff = spool.backoff("pacs")
    assert backoff is not None and (backoff.failures, backoff.retry_at, backoff.last_error) == (2, 1100.0, "refused")
    clock.t = 1010.0
    d = put(spool, make_object(16, 16, seed=4), ("pacs", "other")).sop_instance_uid
    assert _row(spool, d, "pacs").next_attempt_at == 1100.0  # joins the backoff
    assert _row(spool, d, "other").next_attempt_at == 1010.0  # the other is not held
    spool.close()
    reopened = Spool(spool.directory, spool.database, min_free_bytes=0, clock=clock)  # persisted
    try:
        assert reopened.backoff("pacs") == backoff
        assert reopened.release_destination("pacs", 1020.0) == 3  # a, b, d: held by the destination
        assert [_row(reopened, u, "pacs").next_attempt_at for u in (a, b, c, d)] == [
            1020.0, 1020.0, 5000.0, 1020.0]
        assert reopened.backoff("pacs") is None and reopened.release_destination("pacs", 1030.0) == 0
        clock.t = 1040.0
        e = put(reopened, make_object(16, 16, seed=5)).sop_instance_uid
        assert _row(reopened, e, "pacs").next_attempt_at == 1040.0
    finally:
        reopened.close()


def test_an_operator_retry_does_not_send_an_image_held_for_the_verdict(spool: Spool, clock: Clock) -> None:
    """`dxgate queue retry` ends a backoff, not the technologist's review: a held image stays held."""
    spool.hold_for_review(600.0, frozenset({make_object().sop_class_uid}))
    held = make_object(seed=1)
    put(spool, held, ("pacs",))
    clock.t += 1
    spool.retry_now(held.sop_instance_uid, "pacs")
    assert spool.due("pacs", clock.t) == []
    [row] = spool.deliveries(held.sop_instance_uid)
    assert row.held_until == 1600.0 and row.next_attempt_at == 1600.0
    assert spool.release_held(held.sop_instance_uid) == ["pacs"]  # accepted: due at once
    assert [d.sop_instance_uid for d in spool.due("pacs", clock.t)] == [held.sop_instance_uid]
