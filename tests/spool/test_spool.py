"""The durability point: what Spool.put acknowledges is on disk, complete and queued."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import SpoolError
from gateway.spool import DeliveryState, Spool, files
from tests.spool.objects import make_object, put


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=lambda: 1000.0)
    yield s
    s.close()


def test_put_makes_file_and_rows_durable(tmp_path: Path, spool: Spool) -> None:
    obj = make_object(seed=1)
    saved = put(spool, obj, ("pacs", "backup"))
    assert Path(saved.path).read_bytes() == obj.data
    assert saved.sha256 == hashlib.sha256(obj.data).hexdigest() and saved.size == len(obj.data)
    assert saved.destinations == ("backup", "pacs")
    assert Path(saved.path).parent.parent == tmp_path / "spool"  # hashed two-character bucket
    spool.close()

    # a fresh connection (another process, after a crash) sees the committed rows
    conn = sqlite3.connect(tmp_path / "state.db")
    inst = conn.execute("select sop_class_uid, study_instance_uid, accession_number, sha256, size "
                        "from instances where sop_instance_uid = ?", [obj.sop_instance_uid]).fetchone()
    assert inst == (obj.sop_class_uid, obj.study_instance_uid, obj.accession_number, saved.sha256, len(obj.data))
    rows = conn.execute("select destination, state, attempts from deliveries where sop_instance_uid = ? "
                        "order by destination", [obj.sop_instance_uid]).fetchall()
    assert rows == [("backup", "pending", 0), ("pacs", "pending", 0)]
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    conn.close()

    reopened = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0)
    try:
        assert reopened.pragmas() == {"journal_mode": "wal", "synchronous": 2}  # 2 = FULL
        [due] = reopened.due("pacs", now=1000.0, limit=10)
        assert due.sop_instance_uid == obj.sop_instance_uid and due.state is DeliveryState.PENDING
        assert Path(due.path).read_bytes() == obj.data
        assert reopened.recovery.unreferenced_files == () and reopened.recovery.removed_temp_files == ()
    finally:
        reopened.close()


def test_reput_with_identical_bytes_is_idempotent(spool: Spool) -> None:
    obj = make_object(seed=2)
    first = put(spool, obj)
    again = put(spool, obj, ("pacs", "backup"))
    assert again.path == first.path and again.sha256 == first.sha256
    assert again.destinations == ("backup", "pacs")  # a new destination is added, nothing duplicated
    assert spool.counts() == {"pending": 2, "sending": 0, "sent": 0, "committed": 0, "quarantined": 0}


def test_reput_with_different_bytes_is_refused(spool: Spool) -> None:
    obj = make_object(seed=3)
    put(spool, obj)
    other = make_object(seed=4)
    with pytest.raises(SpoolError, match="different content"):
        spool.put(other.data, sop_instance_uid=obj.sop_instance_uid, sop_class_uid=obj.sop_class_uid,
                  study_instance_uid=obj.study_instance_uid, accession_number="", destinations=["pacs"])
    assert Path(spool.instance(obj.sop_instance_uid).path).read_bytes() == obj.data


@pytest.mark.parametrize("change, message", [
    ({"sop_instance_uid": "1.2.03"}, "not a valid DICOM UID"),
    ({"sop_class_uid": ""}, "not a valid DICOM UID"),
    ({"destinations": []}, "destination"),
    ({"data": b"not dicom" * 20}, "Part-10"),
])
def test_bad_input_is_refused_with_a_clear_error(spool: Spool, change: dict, message: str) -> None:
    obj = make_object(seed=5)
    args = {"data": obj.data, "sop_instance_uid": obj.sop_instance_uid, "sop_class_uid": obj.sop_class_uid,
            "study_instance_uid": obj.study_instance_uid, "accession_number": "", "destinations": ["pacs"]}
    args.update(change)
    data = args.pop("data")
    with pytest.raises(SpoolError, match=message):
        spool.put(data, **args)
    assert spool.counts()["pending"] == 0


def test_disk_guard_refuses_before_the_minimum_and_deletes_nothing(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=1_000_000)
    try:
        kept = put(spool, make_object(seed=6))
        obj = make_object(seed=7)
        monkeypatch.setattr(files, "free_bytes", lambda _d: 1_000_000 + len(obj.data) - 1)
        with pytest.raises(SpoolError, match="acquisition refused"):
            put(spool, obj)
        assert spool.instance(obj.sop_instance_uid) is None
        assert not (tmp_path / "spool" / files.relative_path(obj.sop_instance_uid)).exists()
        assert Path(kept.path).read_bytes()  # spooled images are never deleted to make room
        monkeypatch.setattr(files, "free_bytes", lambda _d: 1_000_000 + len(obj.data))
        put(spool, obj)  # exactly at the minimum is allowed
        assert spool.counts()["pending"] == 2
    finally:
        spool.close()


def test_state_transitions(spool: Spool) -> None:
    a, b = make_object(seed=8), make_object(seed=9)
    put(spool, a)
    put(spool, b)
    spool.mark_retry(a.sop_instance_uid, "pacs", 0xA700, "out of resources", next_attempt_at=1100.0, now=1000.0)
    assert [d.sop_instance_uid for d in spool.due("pacs", 1000.0, 10)] == [b.sop_instance_uid]
    assert [d.sop_instance_uid for d in spool.due("pacs", 1100.0, 10)] == [b.sop_instance_uid, a.sop_instance_uid]
    spool.mark_sent(b.sop_instance_uid, "pacs", 0xB000, now=1001.0)
    spool.quarantine(a.sop_instance_uid, "pacs", 0xA900, "archive refused the object", now=1002.0)
    [qa] = spool.deliveries(a.sop_instance_uid)
    assert (qa.state, qa.attempts, qa.last_status, qa.last_error) == (
        DeliveryState.QUARANTINED, 2, 0xA900, "archive refused the object")
    assert spool.counts() == {"pending": 0, "sending": 0, "sent": 1, "committed": 0, "quarantined": 1}
    assert spool.next_attempt_at() is None
    with pytest.raises(SpoolError, match="no delivery"):
        spool.mark_sent(a.sop_instance_uid, "pacs", 0, now=1003.0)  # quarantine is left only by an operator
    spool.release(a.sop_instance_uid, "pacs", now=1004.0)
    [ra] = spool.due("pacs", 1004.0, 10)
    assert ra.state is DeliveryState.PENDING and ra.attempts == 2
    with pytest.raises(SpoolError, match="no delivery"):
        spool.release(b.sop_instance_uid, "pacs")


def test_recovery_removes_temp_files_and_reports_unreferenced_ones(tmp_path: Path) -> None:
    root, db = tmp_path / "spool", tmp_path / "state.db"
    spool = Spool(root, db, min_free_bytes=0)
    kept, gone = make_object(seed=10), make_object(seed=11)
    put(spool, kept)
    lost = put(spool, gone)
    spool.close()
    orphan = make_object(seed=12)  # as if the process died between rename and commit
    orphan_rel = files.relative_path(orphan.sop_instance_uid)
    files.write_atomic(root / orphan_rel, orphan.data)
    half = root / orphan_rel.parent / f".{orphan_rel.name}.abc123{files.TEMP_SUFFIX}"  # died mid-write
    half.write_bytes(orphan.data[:100])
    Path(lost.path).unlink()  # someone deleted a pending instance's file

    spool = Spool(root, db, min_free_bytes=0)
    try:
        assert spool.recovery.removed_temp_files == (str(half),) and not half.exists()
        assert spool.recovery.unreferenced_files == (orphan_rel.as_posix(),)
        assert [d.sop_instance_uid for d in spool.due("pacs", 1e12, 10)] == [kept.sop_instance_uid]
        [q] = spool.deliveries(gone.sop_instance_uid)
        assert q.state is DeliveryState.QUARANTINED and "missing" in q.last_error
        put(spool, orphan)  # the same object spooled again is then used, with its row
        assert spool.instance(orphan.sop_instance_uid) is not None
    finally:
        spool.close()


@pytest.mark.parametrize("comes_back", ["failed send", "crash while sending", "refused, then released"])
def test_an_image_rejected_while_it_was_being_sent_never_leaves_after_all(spool: Spool, comes_back: str) -> None:
    """The technologist rejects an image the forwarder is sending: it counts as gone (only a
    rejection note can follow it). If that send fails, the crash leaves it 'sending', or the
    archive refuses it and an operator releases it, the row must not become due again."""
    a = make_object(seed=21)
    put(spool, a)
    uid = a.sop_instance_uid
    spool.mark_sending("pacs", [uid], now=1000.0)
    held, left = spool.withhold(uid, "positioning", now=1001.0)
    assert (held, left) == ([], ["pacs"])
    if comes_back == "failed send":
        spool.back_off("pacs", [(uid, None, "connection reset")], retry_at=1010.0, error="reset", now=1002.0)
    elif comes_back == "crash while sending":
        spool.unsend()
    else:
        spool.quarantine(uid, "pacs", 0xA900, "archive refused the object", now=1002.0)
        with pytest.raises(SpoolError, match="no delivery"):  # withheld at once, nothing to release
            spool.release(uid, "pacs", now=1003.0)
    assert spool.due("pacs", 2000.0, 10) == []
    [row] = spool.deliveries(uid)
    assert row.state is DeliveryState.WITHHELD
