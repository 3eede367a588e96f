"""Retention of rejected images (issue 11): a rejected instance's file is kept `keep_rejected_s`
after its rejection for reject analysis, then deleted once none of its deliveries can still
leave — never to make room, never while a delivery could still go. The clock is injected."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.errors import SpoolError
from gateway.spool import DeliveryState, RetentionPolicy, Spool
from tests.spool.objects import Clock, make_object, put

DAY = 86400.0
KEEP_S = 90 * DAY
# "pacs" commits; "research" keeps a sent file 100 s
POLICY = RetentionPolicy(commits=frozenset({"pacs"}), age_s={"research": 100.0})


@pytest.fixture(autouse=True)
def keeping_rejected(spool: Spool) -> None:
    spool.keep_rejected_s = KEEP_S


def rejected(spool: Spool, seed: int, destinations: tuple[str, ...] = ("pacs", "research")) -> tuple[str, Path]:
    """An instance queued and rejected before it left (every delivery withheld)."""
    o = make_object(seed=seed)
    path = Path(put(spool, o, destinations).path)
    held, left = spool.withhold(o.sop_instance_uid, "rejected for quality reasons at the console")
    assert sorted(held) == sorted(destinations) and left == []
    return o.sop_instance_uid, path


def test_a_rejected_file_goes_after_keep_rejected_days_and_a_younger_one_stays(
        spool: Spool, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    old_uid, old_path = rejected(spool, seed=1)
    clock.t += 10 * DAY
    young_uid, young_path = rejected(spool, seed=2)
    clock.t = 1000.0 + KEEP_S - 1
    assert spool.retain(POLICY) == [] and old_path.exists()  # not yet: one second short
    clock.t = 1000.0 + KEEP_S
    with caplog.at_level(logging.INFO, logger="gateway.spool"):
        assert spool.retain(POLICY) == [old_uid]
    assert not old_path.exists() and spool.removed(old_uid)
    assert young_path.exists() and not spool.removed(young_uid)  # rejected 10 days later: 10 days to go
    assert spool.rejected_files_removed == 1
    # the record of what happened stays: every delivery withheld, never sent
    assert {d.state for d in spool.deliveries(old_uid)} == {DeliveryState.WITHHELD}
    # logged with the UID only: the patient data the object carries never reaches the log
    lines = [r.getMessage() for r in caplog.records if old_uid in r.getMessage()]
    assert lines and all("Müller" not in line and "PAT-0815" not in line and "ACC0" not in line for line in lines)
    clock.t += 10 * DAY
    assert spool.retain(POLICY) == [young_uid] and not young_path.exists()
    assert spool.rejected_files_removed == 2


@pytest.mark.parametrize("state", ["sending", "sent-uncommitted"])
def test_a_rejected_file_whose_delivery_can_still_leave_or_be_needed_is_kept(
        spool: Spool, clock: Clock, state: str) -> None:
    """In flight at the rejection (sending: it may come back and be sent again), or stored at a
    committing archive that has not committed it: however old the rejection, the file stays."""
    o = make_object(seed=3)
    uid = o.sop_instance_uid
    path = Path(put(spool, o, ("pacs", "research")).path)
    spool.mark_sending("pacs", [uid], clock.t)
    if state == "sent-uncommitted":
        spool.mark_sent(uid, "pacs", 0, clock.t)
    _, left = spool.withhold(uid, "rejected")
    assert left == ["pacs"]
    clock.t += 10 * KEEP_S
    assert spool.retain(POLICY) == [] and path.exists()
    assert spool.rejected_files_removed == 0


def test_a_rejected_image_that_left_and_was_committed_is_kept_its_days_too(spool: Spool, clock: Clock) -> None:
    """Rejected after it left: committed at the PACS. The ordinary rule would delete it at once;
    a rejected image is kept its days all the same, then goes."""
    o = make_object(seed=4)
    uid = o.sop_instance_uid
    path = Path(put(spool, o, ("pacs",)).path)
    spool.mark_sending("pacs", [uid], clock.t)
    spool.mark_sent(uid, "pacs", 0, clock.t)
    _, left = spool.withhold(uid, "rejected")
    assert left == ["pacs"]
    txn = "2.25.4711"
    items = spool.commitments.open(txn, "pacs", [uid], clock.t, clock.t)
    assert spool.commitments.apply(txn, items, (), clock.t) is not None
    assert [d.state for d in spool.deliveries(uid)] == [DeliveryState.COMMITTED]
    clock.t += DAY
    assert spool.retain(POLICY) == [] and path.exists()
    clock.t = 1000.0 + KEEP_S
    assert spool.retain(POLICY) == [uid] and not path.exists()


def test_keep_rejected_zero_keeps_them_forever(spool: Spool, clock: Clock) -> None:
    spool.keep_rejected_s = 0.0
    uid, path = rejected(spool, seed=5)
    clock.t += 100 * 365 * DAY
    assert spool.retain(POLICY) == [] and path.exists() and not spool.removed(uid)


def test_a_rejected_file_is_not_deleted_to_make_room(spool: Spool, clock: Clock) -> None:
    """Retention runs on its own schedule with its own rule: a full disk refuses the next image
    and leaves a young rejected file where it is."""
    _, path = rejected(spool, seed=6)
    spool.min_free_bytes = 1 << 62  # the disk is "full"
    with pytest.raises(SpoolError, match="acquisition refused"):
        put(spool, make_object(seed=7), ("pacs",))
    assert spool.retain(POLICY) == [] and path.exists()
