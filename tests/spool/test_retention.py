"""Retention: a spooled file goes only when every destination is done with it, never to make room."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.errors import SpoolError
from gateway.spool import DeliveryState, RetentionPolicy, Spool, files
from tests.spool.objects import Clock, make_object, put

POLICY = RetentionPolicy(commits=frozenset({"pacs"}), age_s={"research": 100.0})


def commit(spool: Spool, uid: str, destination: str, now: float) -> None:
    """What a commitment report does (ask, then apply), through the spool's own book."""
    txn = f"2.25.{abs(hash((uid, destination, now))) % 10**30}"
    items = spool.commitments.open(txn, destination, [uid], now, now)
    assert items
    outcome = spool.commitments.apply(txn, items, (), now)
    assert outcome is not None and outcome.committed == (uid,)


def test_deleted_only_once_every_destination_is_done(spool: Spool, clock: Clock) -> None:
    o = make_object(seed=1)
    path = Path(put(spool, o, ("pacs", "research")).path)
    assert spool.retain(POLICY) == []  # nothing sent
    spool.mark_sent(o.sop_instance_uid, "research", 0, now=1000.0)
    clock.t = 5000.0
    assert spool.retain(POLICY) == [] and path.exists()  # the committing PACS has not even stored it
    spool.mark_sent(o.sop_instance_uid, "pacs", 0, now=5000.0)
    clock.t = 10**9
    assert spool.retain(POLICY) == [] and path.exists()  # stored is not committed, whatever the age
    commit(spool, o.sop_instance_uid, "pacs", 10**9)
    assert spool.retain(POLICY) == [o.sop_instance_uid]
    assert not path.exists() and spool.removed(o.sop_instance_uid)
    # the record stays: what went where, committed
    assert {d.destination: d.state for d in spool.deliveries(o.sop_instance_uid)} == {
        "pacs": DeliveryState.COMMITTED, "research": DeliveryState.SENT}


def test_without_commitment_the_age_after_success_counts(spool: Spool, clock: Clock) -> None:
    o = make_object(seed=2)
    path = Path(put(spool, o, ("research",)).path)
    spool.mark_sent(o.sop_instance_uid, "research", 0, now=1000.0)
    clock.t = 1099.0
    assert spool.retain(POLICY) == [] and path.exists()
    clock.t = 1100.0
    assert spool.retain(POLICY) == [o.sop_instance_uid] and not path.exists()


@pytest.mark.parametrize("state", ["pending", "sending", "quarantined"])
def test_an_unfinished_delivery_keeps_the_file(spool: Spool, clock: Clock, state: str) -> None:
    o = make_object(seed=3)
    path = Path(put(spool, o, ("pacs", "research")).path)
    commit_pacs = o.sop_instance_uid
    spool.mark_sent(commit_pacs, "pacs", 0, now=1000.0)
    commit(spool, commit_pacs, "pacs", 1000.0)
    if state == "sending":
        spool.mark_sending("research", [o.sop_instance_uid], 1000.0)
    elif state == "quarantined":
        spool.quarantine(o.sop_instance_uid, "research", 0xC000, "refused", 1000.0)
    clock.t = 10**9
    assert spool.retain(POLICY) == [] and path.exists()


def test_a_destination_no_longer_configured_keeps_the_file(spool: Spool, clock: Clock) -> None:
    o = make_object(seed=4)
    path = Path(put(spool, o, ("research", "old")).path)
    spool.mark_sent(o.sop_instance_uid, "research", 0, now=1000.0)
    spool.mark_sent(o.sop_instance_uid, "old", 0, now=1000.0)
    clock.t = 10**9
    assert spool.retain(POLICY) == [] and path.exists()  # "old" has no policy: nothing says it may go
    assert spool.retain(RetentionPolicy()) == [] and path.exists()


def test_never_to_make_room(tmp_path: Path, clock: Clock) -> None:
    """A full disk refuses the next image; nothing spooled is deleted to make room."""
    spool = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=clock)
    try:
        kept = [make_object(seed=10 + i) for i in range(3)]
        paths = [Path(put(spool, o, ("research",)).path) for o in kept]
        spool.mark_sent(kept[0].sop_instance_uid, "research", 0, now=1000.0)  # sent, not yet old enough
        spool.min_free_bytes = shutil.disk_usage(tmp_path).free  # the disk is now "full"
        with pytest.raises(SpoolError, match="acquisition refused"):
            put(spool, make_object(seed=20), ("research",))
        assert spool.retain(POLICY) == []
        assert all(p.exists() for p in paths)
    finally:
        spool.close()


def test_a_crash_between_decision_and_unlink_is_finished_at_the_next_open(
        tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=clock)
    o = make_object(seed=30)
    path = Path(put(spool, o, ("research",)).path)
    spool.mark_sent(o.sop_instance_uid, "research", 0, now=1000.0)
    clock.t = 2000.0

    def crash(_path: Path) -> None:
        raise KeyboardInterrupt("killed before the unlink")

    monkeypatch.setattr(files, "remove", crash)
    with pytest.raises(KeyboardInterrupt):
        spool.retain(POLICY)
    monkeypatch.undo()
    spool.close()
    assert path.exists()
    spool = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=clock)
    try:
        assert not path.exists()
        assert spool.recovery.unreferenced_files == () and spool.recovery.missing_files == ()
        assert [d.state for d in spool.deliveries(o.sop_instance_uid)] == [DeliveryState.SENT]
    finally:
        spool.close()


def test_a_removed_file_is_not_reported_missing_nor_quarantined(tmp_path: Path, clock: Clock) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=clock)
    o = make_object(seed=31)
    put(spool, o, ("research",))
    spool.mark_sent(o.sop_instance_uid, "research", 0, now=1000.0)
    clock.t = 2000.0
    assert spool.retain(POLICY) == [o.sop_instance_uid]
    spool.close()
    spool = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=clock)
    try:
        assert spool.recovery.missing_files == ()
        assert [d.state for d in spool.deliveries(o.sop_instance_uid)] == [DeliveryState.SENT]
    finally:
        spool.close()
