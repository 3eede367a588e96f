"""Storage commitment against a scripted archive: reports on the same or a new association,
failures resent once then quarantined, unanswered requests asked again then alarmed, a
restart mid-commitment, and the listener's allow-list with its audit records."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification

from gateway.alarms import Alarms
from gateway.audit import AuditTrail
from gateway.config import DestinationConfig
from gateway.errors import SpoolError
from gateway.forward import CommitmentListener, Forwarder, ListenerSettings, Outcome
from gateway.forward.commitment import Report
from gateway.netopts import socket_nodelay
from gateway.spool import DeliveryState, Spool, TransactionState
from tests.forward.commit_scp import NO_SUCH_OBJECT, CommitSCP
from tests.forward.conftest import FakeClock
from tests.spool.objects import make_object, put

LISTENER_AE = "DXGATE"


@pytest.fixture
def commit_scp() -> Iterator[Callable[..., CommitSCP]]:
    started: list[CommitSCP] = []

    def make(**kwargs: Any) -> CommitSCP:
        scp = CommitSCP(**kwargs).start()
        started.append(scp)
        return scp

    yield make
    for scp in started:
        scp.stop()


def dest(scp: CommitSCP, **kw: Any) -> DestinationConfig:
    values: dict[str, Any] = dict(name="pacs", host="127.0.0.1", port=scp.port, called_ae=scp.aet, timeout_s=10.0,
                                  commitment=True, commitment_hold_s=10.0, commitment_timeout_s=60.0)
    values.update(kw)
    return DestinationConfig(**values)


def forwarder(spool: Spool, clock: FakeClock, *dests: DestinationConfig, alarms: Alarms | None = None) -> Forwarder:
    return Forwarder(spool, dests, calling_ae=LISTENER_AE, clock=clock, alarms=alarms)


def states(spool: Spool, uid: str) -> list[DeliveryState]:
    return [d.state for d in spool.deliveries(uid)]


def test_report_on_the_same_association_commits_and_frees_the_spool_file(
        spool: Spool, clock: FakeClock, commit_scp: Callable[..., CommitSCP]) -> None:
    scp = commit_scp(report="same")
    objs = [make_object(seed=i) for i in range(3)]
    paths = [Path(put(spool, o).path) for o in objs]
    fwd = forwarder(spool, clock, dest(scp))
    assert [r.outcome for r in fwd.forward_due()] == [Outcome.SENT] * 3
    # one association: C-STOREs, the N-ACTION naming every instance, the report on it
    assert scp.associations == 1
    assert len(scp.actions) == 1 and sorted(scp.actions[0][1]) == sorted(o.sop_instance_uid for o in objs)
    assert scp.report_status == [0x0000]
    txn = spool.commitments.transaction(scp.actions[0][0])
    assert txn is not None and txn.state is TransactionState.ANSWERED and txn.asks == 1
    for o, p in zip(objs, paths, strict=True):
        assert states(spool, o.sop_instance_uid) == [DeliveryState.COMMITTED]
        assert not p.exists() and spool.removed(o.sop_instance_uid)
    assert sorted(scp.stored) == sorted(o.sop_instance_uid for o in objs)  # nothing sent twice
    assert [d.sop_instance_uid for d in spool.listing(state="committed")] != []


def test_sent_but_not_committed_keeps_the_file(spool: Spool, clock: FakeClock,
                                               commit_scp: Callable[..., CommitSCP]) -> None:
    scp = commit_scp(report="none")
    o = make_object(seed=5)
    path = Path(put(spool, o).path)
    fwd = forwarder(spool, clock, dest(scp, commitment_hold_s=0))
    assert [r.outcome for r in fwd.forward_due()] == [Outcome.SENT]
    clock.advance(365 * 86400)  # far past any age: only a commitment frees it
    assert fwd.retain() == []
    assert path.exists() and states(spool, o.sop_instance_uid) == [DeliveryState.SENT]


def test_failed_instance_is_resent_once_then_quarantined_with_the_reason(
        spool: Spool, clock: FakeClock, commit_scp: Callable[..., CommitSCP]) -> None:
    bad, good = make_object(seed=10), make_object(seed=11)
    scp = commit_scp(report="same", fail=lambda _n, uid: NO_SUCH_OBJECT if uid == bad.sop_instance_uid else None)
    bad_path, good_path = Path(put(spool, bad).path), Path(put(spool, good).path)
    quarantined: list[tuple[str, str]] = []
    alarms = Alarms()
    fwd = forwarder(spool, clock, dest(scp), alarms=alarms)
    fwd.on_result = lambda r: quarantined.append((r.uid, r.error or "")) if r.outcome is Outcome.QUARANTINED else None
    fwd.forward_due()  # sent, reported failed, sent again at once, reported failed again
    assert states(spool, good.sop_instance_uid) == [DeliveryState.COMMITTED] and not good_path.exists()
    row = spool.deliveries(bad.sop_instance_uid)[0]
    assert row.state is DeliveryState.QUARANTINED and row.commit_failures == 2
    assert "0x0112" in (row.last_error or "") and "No such object instance" in (row.last_error or "")
    assert quarantined == [(bad.sop_instance_uid, row.last_error)]
    assert alarms.active("commitment-failed")
    assert [len(uids) for _, uids in scp.actions] == [2, 1]  # the second request names only the resent one
    assert scp.stored.count(bad.sop_instance_uid) == 2  # resent once, not more
    assert len(set(scp.stored_bytes[bad.sop_instance_uid])) == 1  # the same bytes each time
    assert scp.stored.count(good.sop_instance_uid) == 1  # nothing resent after a commitment
    assert bad_path.exists()  # a quarantined instance keeps its file
    clock.advance(3600)
    fwd.forward_due()
    assert scp.stored.count(bad.sop_instance_uid) == 2  # quarantine is left only by an operator
    assert len(scp.actions) == 2


def test_failed_once_then_committed_after_one_resend(spool: Spool, clock: FakeClock,
                                                    commit_scp: Callable[..., CommitSCP]) -> None:
    o = make_object(seed=12)
    scp = commit_scp(report="same", fail=lambda n, _uid: NO_SUCH_OBJECT if n == 0 else None)
    path = Path(put(spool, o).path)
    forwarder(spool, clock, dest(scp)).forward_due()
    row = spool.deliveries(o.sop_instance_uid)[0]
    assert row.state is DeliveryState.COMMITTED and row.commit_failures == 1
    assert scp.stored == [o.sop_instance_uid] * 2 and len(scp.actions) == 2
    assert scp.actions[0][0] != scp.actions[1][0]  # the resent instance is asked about in a new transaction
    assert not path.exists()


def test_no_report_asks_again_then_alarms(spool: Spool, clock: FakeClock,
                                          commit_scp: Callable[..., CommitSCP]) -> None:
    scp = commit_scp(report="none")
    o = make_object(seed=20)
    path = Path(put(spool, o).path)
    alarms = Alarms()
    fwd = forwarder(spool, clock, dest(scp, commitment_hold_s=0, commitment_timeout_s=60, commitment_asks=2),
                    alarms=alarms)
    fwd.forward_due()
    assert len(scp.actions) == 1
    clock.advance(59)
    fwd.forward_due()
    assert len(scp.actions) == 1  # not yet overdue
    clock.advance(2)
    fwd.forward_due()
    assert len(scp.actions) == 2 and scp.actions[1] == scp.actions[0]  # the same transaction, asked again
    assert not alarms.active("commitment-unanswered")
    clock.advance(61)
    fwd.forward_due()
    assert len(scp.actions) == 2  # bounded
    assert alarms.active("commitment-unanswered")
    txn = spool.commitments.transaction(scp.actions[0][0])
    assert txn is not None and txn.state is TransactionState.UNANSWERED
    assert path.exists() and states(spool, o.sop_instance_uid) == [DeliveryState.SENT]
    # a report that comes late is still taken
    fwd.committer.apply(Report(scp.actions[0][0], ((o.sop_instance_uid, o.sop_class_uid),), ()))
    assert states(spool, o.sop_instance_uid) == [DeliveryState.COMMITTED]
    assert not alarms.active("commitment-unanswered")
    assert fwd.retain() == [o.sop_instance_uid] and not path.exists()


def test_a_restart_mid_commitment_asks_the_open_transaction_again(
        tmp_path: Path, clock: FakeClock, commit_scp: Callable[..., CommitSCP]) -> None:
    scp = commit_scp(report="none")
    o = make_object(seed=30)
    spool = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=clock)
    put(spool, o)
    forwarder(spool, clock, dest(scp, commitment_hold_s=0, commitment_timeout_s=3600)).forward_due()
    assert len(scp.actions) == 1
    spool.close()  # the process ends before any report
    scp.report = "same"
    spool = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=clock)
    try:
        forwarder(spool, clock, dest(scp, commitment_timeout_s=3600)).forward_due()  # no time has passed
        assert len(scp.actions) == 2 and scp.actions[1] == scp.actions[0]
        assert states(spool, o.sop_instance_uid) == [DeliveryState.COMMITTED]
        assert scp.stored == [o.sop_instance_uid]  # asked again, never sent again
    finally:
        spool.close()


def test_rows_left_sending_by_a_crash_are_pending_again(spool: Spool, clock: FakeClock,
                                                        commit_scp: Callable[..., CommitSCP]) -> None:
    scp = commit_scp(report="same")
    o = make_object(seed=40)
    put(spool, o)
    spool.mark_sending("pacs", [o.sop_instance_uid], clock())  # the state a kill -9 mid-association leaves
    assert states(spool, o.sop_instance_uid) == [DeliveryState.SENDING]
    assert spool.due("pacs", clock()) == []
    fwd = forwarder(spool, clock, dest(scp))
    assert states(spool, o.sop_instance_uid) == [DeliveryState.PENDING]
    fwd.forward_due()
    assert states(spool, o.sop_instance_uid) == [DeliveryState.COMMITTED]


def test_sent_before_commitment_was_asked_is_asked_at_the_next_pass(
        spool: Spool, clock: FakeClock, commit_scp: Callable[..., CommitSCP]) -> None:
    """A crash between the C-STOREs and the N-ACTION leaves sent rows no transaction covers."""
    scp = commit_scp(report="same")
    o = make_object(seed=45)
    put(spool, o)
    forwarder(spool, clock, dest(scp, commitment=False)).forward_due()
    assert scp.actions == []
    forwarder(spool, clock, dest(scp)).forward_due()
    assert [uids for _, uids in scp.actions] == [[o.sop_instance_uid]]
    assert states(spool, o.sop_instance_uid) == [DeliveryState.COMMITTED] and scp.stored == [o.sop_instance_uid]


# --- the listener (SCP role) -----------------------------------------------------------------


def listener_settings(**kw: Any) -> ListenerSettings:
    values: dict[str, Any] = dict(ae_title=LISTENER_AE, host="127.0.0.1", port=0,
                                  allowed_aes=frozenset({"COMMITSCP"}), allowed_hosts=("127.0.0.1",), timeout_s=10.0)
    values.update(kw)
    return ListenerSettings(**values)


def test_report_on_a_new_association_to_the_listener(spool: Spool, clock: FakeClock,
                                                     commit_scp: Callable[..., CommitSCP]) -> None:
    objs = [make_object(seed=50 + i) for i in range(2)]
    paths = [Path(put(spool, o).path) for o in objs]
    fwds: list[Forwarder] = []
    listener = CommitmentListener(listener_settings(), lambda e: fwds[0].committer.handle_report(e)).start()
    try:
        scp = commit_scp(report="new", listener=("127.0.0.1", listener.port, LISTENER_AE))
        fwd = forwarder(spool, clock, dest(scp, commitment_hold_s=0))
        fwds.append(fwd)
        assert [r.outcome for r in fwd.forward_due()] == [Outcome.SENT] * 2
        assert scp.reported.wait(10)
        assert scp.report_status == [0x0000] and listener.reports == 1 and listener.refused == 0
        assert scp.associations == 1  # dxgate's one association; the report came on the archive's own
        for o in objs:
            assert states(spool, o.sop_instance_uid) == [DeliveryState.COMMITTED]
        fwd.retain()  # (the pass's own sweep may have come after the report already)
        assert all(spool.removed(o.sop_instance_uid) for o in objs) and not any(p.exists() for p in paths)
    finally:
        listener.stop()


def _associate(port: int, calling: str, called: str = LISTENER_AE, bind: str = "127.0.0.1") -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(StorageCommitmentPushModel)
    return ae.associate("127.0.0.1", port, ae_title=called, bind_address=(bind, 0))


def test_listener_admits_only_allowed_aes_and_hosts_and_audits_every_refusal(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit.db", source_id=LISTENER_AE)
    when = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    listener = CommitmentListener(listener_settings(allowed_aes=frozenset({"ARCHIVE"})),
                                  lambda _e: (0x0000, None), audit=trail.record, clock=lambda: when).start()
    try:
        refused = [("INTRUDER", LISTENER_AE, "127.0.0.1"), ("ARCHIVE", "SOMEONE", "127.0.0.1"),
                   ("ARCHIVE", LISTENER_AE, "127.0.0.2")]
        for calling, called, bind in refused:
            assoc = _associate(listener.port, calling, called, bind)
            assert assoc.is_rejected and not assoc.is_established, (calling, called, bind)
        assoc = _associate(listener.port, "ARCHIVE")
        assert assoc.is_established
        try:
            assert int(assoc.send_c_echo().Status) == 0x0000
            server_side = listener._server.active_associations
            assert server_side and all(socket_nodelay(a) for a in server_side)  # TCP_NODELAY on its sockets
        finally:
            assoc.release()
        assert listener.refused == 3
        records = trail.query()
        assert [(r["event"], r["outcome"]) for r in records] == [("Node Authentication", 4)] * 3
        xml = "\n".join(x for _, _, x in trail.unsent())
        for calling, _, bind in refused:
            assert f'UserID="{calling}"' in xml and f'NetworkAccessPointID="{bind}"' in xml
        assert 'csd-code="110113"' in xml  # EventID Security Alert
        assert "not allowed" in xml and "is not 'DXGATE'" in xml
    finally:
        listener.stop()
        trail.close()


def test_listener_binds_where_configured() -> None:
    listener = CommitmentListener(listener_settings(), lambda _e: (0x0000, None)).start()
    try:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5):
            pass
        assert listener._server.server_address[0] == "127.0.0.1"
    finally:
        listener.stop()


def test_an_overdue_request_waits_for_the_destination_backoff(spool: Spool, clock: FakeClock,
                                                             commit_scp: Callable[..., CommitSCP]) -> None:
    """A worker must not spin on a request it may not make while its archive backs off."""
    scp = commit_scp(report="none")
    o = make_object(seed=60)
    put(spool, o)
    d = dest(scp, commitment_hold_s=0, commitment_timeout_s=60)
    fwd = forwarder(spool, clock, d)
    fwd.forward_due()
    clock.advance(120)  # overdue
    assert fwd.committer.next_due(d) == clock() - 60
    spool.back_off("pacs", [], clock() + 100, "archive down", clock())
    assert fwd.committer.next_due(d) == clock() + 100
    fwd.forward_due()
    assert len(scp.actions) == 1  # not asked while backing off
    clock.advance(100)
    fwd.forward_due()
    assert len(scp.actions) == 2


def test_a_failing_sweep_is_alarmed_and_never_backs_the_destination_off(
        spool: Spool, clock: FakeClock, commit_scp: Callable[..., CommitSCP], monkeypatch: pytest.MonkeyPatch) -> None:
    scp = commit_scp(report="same")
    o = make_object(seed=65)
    path = Path(put(spool, o).path)
    alarms = Alarms()
    fwd = forwarder(spool, clock, dest(scp), alarms=alarms)

    def broken(*_a: object, **_k: object) -> list[str]:
        raise SpoolError("disk gone read-only")

    monkeypatch.setattr(spool, "retain", broken)
    assert [r.outcome for r in fwd.forward_due()] == [Outcome.SENT]
    assert alarms.active("commitment-pass-failed") and spool.backoff("pacs") is None
    assert states(spool, o.sop_instance_uid) == [DeliveryState.COMMITTED] and path.exists()
    monkeypatch.undo()
    fwd.forward_due()
    assert not alarms.active("commitment-pass-failed") and not path.exists()
