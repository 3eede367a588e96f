"""Forwarder against scripted pynetdicom SCPs: statuses, aborts, PACS down, association reuse."""

from __future__ import annotations

import random
import socket
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt

from gateway.config import DestinationConfig
from gateway.errors import ForwardError
from gateway.forward import Forwarder, Outcome, scu
from gateway.netopts import socket_nodelay
from gateway.spool import DeliveryState, Spool
from tests.forward.conftest import FakeClock
from tests.forward.scp import ScriptedSCP, abort_first, always
from tests.spool.objects import make_object, put


def dest(port: int, name: str = "pacs", aet: str = "TESTSCP") -> DestinationConfig:
    return DestinationConfig(name=name, host="127.0.0.1", port=port, called_ae=aet, timeout_s=10.0)


def forwarder(spool: Spool, clock: FakeClock, *dests: DestinationConfig, **kw: object) -> Forwarder:
    return Forwarder(spool, dests, calling_ae="DXGATE", clock=clock, rng=random.Random(7), **kw)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_backlog_goes_over_one_association_with_nodelay(spool: Spool, clock: FakeClock,
                                                        scp_factory: Callable[..., ScriptedSCP]) -> None:
    scp = scp_factory()
    objs = [make_object(seed=i) for i in range(6)]
    for o in objs:
        put(spool, o)
    nodelay: list[bool] = []
    fwd = forwarder(spool, clock, dest(scp.port),
                    extra_handlers=[(evt.EVT_ESTABLISHED, lambda e: nodelay.append(socket_nodelay(e.assoc)))])
    results = fwd.forward_due()
    assert [r.outcome for r in results] == [Outcome.SENT] * 6
    assert scp.associations == 1 and nodelay == [True]
    assert sorted(scp.stored) == sorted(o.sop_instance_uid for o in objs)
    assert spool.counts() == {"pending": 0, "sending": 0, "sent": 6, "committed": 0, "quarantined": 0}
    by_uid = {str(ds.SOPInstanceUID): ds for ds in scp.datasets}
    for o in objs:
        assert (by_uid[o.sop_instance_uid].pixel_array == o.pixels).all()
    assert fwd.forward_due() == []  # nothing is sent twice
    assert scp.associations == 1


@pytest.mark.parametrize("accepts", [[ExplicitVRLittleEndian, ImplicitVRLittleEndian], [ImplicitVRLittleEndian]])
def test_sent_in_the_stored_syntax_or_converted_when_the_archive_wants_another(
        spool: Spool, clock: FakeClock, scp_factory: Callable[..., ScriptedSCP], accepts: list[str]) -> None:
    """Explicit VR files stream from disk as stored; an Implicit-only archive gets a conversion."""
    scp = scp_factory(transfer_syntaxes=accepts)
    obj = make_object(seed=3)
    put(spool, obj)
    assert [r.outcome for r in forwarder(spool, clock, dest(scp.port)).forward_due()] == [Outcome.SENT]
    (ds,) = scp.datasets
    assert ds.file_meta.TransferSyntaxUID == accepts[0]
    assert (ds.pixel_array == obj.pixels).all()


# every Warning status of PS3.4 / PS3.7 as pynetdicom's table classes them: stored, never quarantined
WARNINGS = [0x0001, 0xB000, 0xB001, 0xB006, 0xB007, 0xB00F, 0x0107, 0x0116]


@pytest.mark.parametrize("status, outcome, state", [
    (0x0000, Outcome.SENT, DeliveryState.SENT),
    *[(w, Outcome.SENT, DeliveryState.SENT) for w in WARNINGS],
    (0xA700, Outcome.RETRY, DeliveryState.PENDING),
    (0xA900, Outcome.QUARANTINED, DeliveryState.QUARANTINED),
    (0xC000, Outcome.QUARANTINED, DeliveryState.QUARANTINED),
])
def test_status_decides_the_row(spool: Spool, clock: FakeClock, scp_factory: Callable[..., ScriptedSCP],
                                status: int, outcome: Outcome, state: DeliveryState) -> None:
    """The status an archive really answers (a pynetdicom SCP) decides the queue row."""
    scp = scp_factory(behaviour=always(status))
    obj = make_object(seed=1)
    put(spool, obj)
    [result] = forwarder(spool, clock, dest(scp.port)).forward_due()
    assert (result.uid, result.outcome, result.status) == (obj.sop_instance_uid, outcome, status)
    [row] = spool.deliveries(obj.sop_instance_uid)
    assert row.state is state and row.last_status == status and row.attempts == 1
    assert scp.stores == 1
    if status in WARNINGS:  # stored, with the warning kept on the row and in the result
        assert scp.stored == [obj.sop_instance_uid]
        assert row.last_error is not None and f"warning: 0x{status:04X}" in row.last_error
        assert result.warning == row.last_error and result.error is None
    if status == 0x0000:
        assert row.last_error is None and result.warning is None
    if outcome is Outcome.QUARANTINED:
        assert f"0x{status:04X}" in row.last_error and "refused" in row.last_error
    if outcome is Outcome.RETRY:
        assert clock() < row.next_attempt_at <= clock() + 2.0  # first backoff: base 2 s with jitter
        assert "0xA700" in row.last_error


def test_transient_status_defers_the_rest_of_the_backlog(spool: Spool, clock: FakeClock,
                                                         scp_factory: Callable[..., ScriptedSCP]) -> None:
    scp = scp_factory(behaviour=always(0xA700))
    for i in range(3):
        put(spool, make_object(seed=i))
    results = forwarder(spool, clock, dest(scp.port)).forward_due()
    assert [r.outcome for r in results] == [Outcome.RETRY] * 3
    assert scp.stores == 1  # an archive out of resources is not hammered with the rest
    assert spool.due("pacs", clock(), 10) == []


def test_pacs_down_then_up(spool: Spool, clock: FakeClock, scp_factory: Callable[..., ScriptedSCP]) -> None:
    port = free_port()  # nothing listens here yet
    obj = make_object(seed=2)
    put(spool, obj)
    fwd = forwarder(spool, clock, dest(port))
    [result] = fwd.forward_due()
    assert result.outcome is Outcome.RETRY and result.status is None
    [row] = spool.deliveries(obj.sop_instance_uid)
    assert row.state is DeliveryState.PENDING and row.next_attempt_at > clock()
    assert "no association" in row.last_error
    scp = scp_factory(port=port)
    assert fwd.forward_due() == []  # not due yet: the backoff holds
    clock.advance(row.next_attempt_at - clock())
    [result] = fwd.forward_due()
    assert result.outcome is Outcome.SENT and scp.stored == [obj.sop_instance_uid]
    [row] = spool.deliveries(obj.sop_instance_uid)
    assert row.state is DeliveryState.SENT and row.attempts == 2


def test_a_down_pacs_gets_one_retry_time_for_the_whole_backlog(spool: Spool, clock: FakeClock,
                                                               scp_factory: Callable[..., ScriptedSCP]) -> None:
    port = free_port()
    objs = [make_object(seed=30 + i) for i in range(5)]
    for o in objs:
        put(spool, o)
    fwd = forwarder(spool, clock, dest(port))
    delays = []
    for _ in range(3):  # three failed passes: the shared delay grows, one connection attempt each
        results = fwd.forward_due()
        assert [r.outcome for r in results] == [Outcome.RETRY] * 5
        times = {row.next_attempt_at for o in objs for row in spool.deliveries(o.sop_instance_uid)}
        assert len(times) == 1
        delays.append(times.pop() - clock())
        clock.advance(delays[-1])
    assert delays[0] < delays[2]
    scp = scp_factory(port=port)
    assert sorted(r.outcome for r in fwd.forward_due()) == [Outcome.SENT] * 5  # all of it, at once
    assert scp.associations == 1


def test_backoff_grows_exponentially_with_jitter_and_is_capped(spool: Spool, clock: FakeClock) -> None:
    fwd = forwarder(spool, clock, dest(free_port()), backoff_base_s=2.0, backoff_max_s=60.0)
    for attempts in range(12):
        ceiling = min(60.0, 2.0 * 2**attempts)
        delays = {fwd.backoff_delay(attempts) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jitter spreads the retries of many gateways


def test_abort_mid_send_resends_the_same_uid_once(spool: Spool, clock: FakeClock,
                                                  scp_factory: Callable[..., ScriptedSCP]) -> None:
    scp = scp_factory(behaviour=abort_first())
    a, b = make_object(seed=3), make_object(seed=4)
    put(spool, a)
    put(spool, b)
    fwd = forwarder(spool, clock, dest(scp.port))
    first = fwd.forward_due()
    assert [r.outcome for r in first] == [Outcome.RETRY, Outcome.RETRY]
    assert "outcome unknown" in first[0].error
    assert scp.stored == []
    clock.advance(3600)
    second = fwd.forward_due()
    assert [r.outcome for r in second] == [Outcome.SENT, Outcome.SENT]
    assert {r.uid for r in second} == {a.sop_instance_uid, b.sop_instance_uid}
    assert sorted(scp.stored) == sorted([a.sop_instance_uid, b.sop_instance_uid])  # stored once each


def test_permanent_association_rejection_quarantines(spool: Spool, clock: FakeClock,
                                                     scp_factory: Callable[..., ScriptedSCP]) -> None:
    scp = scp_factory(require_called_aet=True)
    obj = make_object(seed=5)
    put(spool, obj)
    [result] = forwarder(spool, clock, dest(scp.port, aet="WRONGAET")).forward_due()
    assert result.outcome is Outcome.QUARANTINED and "rejected" in result.error
    [row] = spool.deliveries(obj.sop_instance_uid)
    assert row.state is DeliveryState.QUARANTINED and "permanent" in row.last_error
    spool.release(obj.sop_instance_uid, "pacs")  # the operator fixed the AE title and retries
    [result] = forwarder(spool, clock, dest(scp.port)).forward_due()
    assert result.outcome is Outcome.SENT


def test_corrupt_spool_file_is_quarantined_not_sent(spool: Spool, clock: FakeClock,
                                                    scp_factory: Callable[..., ScriptedSCP]) -> None:
    scp = scp_factory()
    obj = make_object(seed=6)
    saved = put(spool, obj)
    raw = bytearray(Path(saved.path).read_bytes())
    raw[-1] ^= 0xFF
    Path(saved.path).write_bytes(bytes(raw))
    [result] = forwarder(spool, clock, dest(scp.port)).forward_due()
    assert result.outcome is Outcome.QUARANTINED and "sha256" in result.error
    assert scp.stored == []


def test_each_destination_gets_its_own_delivery(spool: Spool, clock: FakeClock,
                                                scp_factory: Callable[..., ScriptedSCP]) -> None:
    good, bad = scp_factory(), scp_factory(behaviour=always(0xC001))
    obj = make_object(seed=7)
    put(spool, obj, ("main", "backup"))
    results = forwarder(spool, clock, dest(good.port, "main"), dest(bad.port, "backup")).forward_due()
    assert {(r.destination, r.outcome) for r in results} == {("main", Outcome.SENT), ("backup", Outcome.QUARANTINED)}


def test_run_loop_wakes_on_event_and_stops(spool: Spool, scp_factory: Callable[..., ScriptedSCP]) -> None:
    scp = scp_factory()
    fwd = Forwarder(spool, [dest(scp.port)], calling_ae="DXGATE")  # real clock: the loop waits for real
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=fwd.run, args=(stop, wake), daemon=True)
    thread.start()
    obj = make_object(seed=8)
    put(spool, obj)
    wake.set()
    assert scp.received.wait(30), "the forwarder did not send after being woken"
    stop.set()
    wake.set()
    thread.join(10)
    assert not thread.is_alive()
    assert scp.stored == [obj.sop_instance_uid]


def test_run_loop_survives_a_failing_pass_and_sends_later(spool: Spool, scp_factory: Callable[..., ScriptedSCP],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A database error mid-pass (disk trouble) must not end forwarding: nothing is sent silently never."""
    scp = scp_factory()
    fwd = Forwarder(spool, [dest(scp.port)], calling_ae="DXGATE", backoff_base_s=0.01, backoff_max_s=0.02)
    real_mark_sent, marked = spool.mark_sent, threading.Event()
    failures = [sqlite3.OperationalError("disk I/O error")]

    def flaky_mark_sent(*args: object, **kwargs: object) -> None:
        if failures:
            raise failures.pop()
        real_mark_sent(*args, **kwargs)  # type: ignore[arg-type]
        marked.set()

    monkeypatch.setattr(spool, "mark_sent", flaky_mark_sent)
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=fwd.run, args=(stop, wake), daemon=True)
    obj = make_object(seed=9)
    put(spool, obj)
    thread.start()
    try:
        assert marked.wait(30), "forwarding never recovered from the failed pass"
        assert thread.is_alive() and fwd.alarms.raised["forward-pass-failed"] == 1
    finally:
        stop.set()
        wake.set()
        thread.join(10)
    assert fwd.alarms.active() == []  # cleared by the success that followed
    assert spool.counts()["sent"] == 1
    # stored twice (the first acknowledgement could not be recorded), same UID, same bytes
    assert scp.stored == [obj.sop_instance_uid] * 2


def test_forward_due_leaves_everything_pending_once_stopping(spool: Spool, clock: FakeClock,
                                                           scp_factory: Callable[..., ScriptedSCP]) -> None:
    scp = scp_factory()
    put(spool, make_object(seed=10))
    stop = threading.Event()
    stop.set()
    assert forwarder(spool, clock, dest(scp.port)).forward_due(stop) == []
    assert scp.stores == 0 and spool.counts()["pending"] == 1


def test_bad_configuration_is_refused(spool: Spool) -> None:
    with pytest.raises(ForwardError, match="unique"):
        Forwarder(spool, [dest(1), dest(2)], calling_ae="DXGATE")
    with pytest.raises(ForwardError, match="AE title"):
        Forwarder(spool, [dest(1)], calling_ae="X" * 17)
    for bad_ae, why in (("A" * 20, "must not exceed 16 characters"), ("PA\\CS", "backslashes"),
                        ("PA\nCS", "control characters"), ("   ", "empty")):
        # built from code, past the configuration's own checks: the forwarder refuses it too
        unchecked = DestinationConfig.model_construct(**{**dest(1).model_dump(), "called_ae": bad_ae})
        with pytest.raises(ForwardError, match=f"destination 'pacs': called AE title .*{why}"):
            Forwarder(spool, [unchecked], calling_ae="DXGATE")


def _explode_for(monkeypatch: pytest.MonkeyPatch, name: str, exc: Exception) -> None:
    """Make opening an association to destination `name` raise `exc` (what pynetdicom raised for a
    20-character called AE title, before configuration refused it): an error no stage expects."""
    real = scu.open_session

    def open_session(destination: DestinationConfig, *args: Any, **kwargs: Any) -> scu.Session:
        if destination.name == name:
            raise exc
        return real(destination, *args, **kwargs)

    monkeypatch.setattr(scu, "open_session", open_session)


def test_an_unexpected_error_for_one_destination_is_recorded_and_the_others_are_served(
        spool: Spool, clock: FakeClock, scp_factory: Callable[..., ScriptedSCP],
        monkeypatch: pytest.MonkeyPatch) -> None:
    good = scp_factory()
    _explode_for(monkeypatch, "broken", ValueError("Invalid 'Called AE' value - must not exceed 16 characters"))
    obj = make_object(seed=21)
    put(spool, obj, ("broken", "main"))
    fwd = forwarder(spool, clock, dest(free_port(), "broken"), dest(good.port, "main"))
    results = fwd.forward_due()
    assert {(r.destination, r.outcome) for r in results} == {("broken", Outcome.RETRY), ("main", Outcome.SENT)}
    assert good.stored == [obj.sop_instance_uid]  # the archive's own view
    [row] = [d for d in spool.deliveries(obj.sop_instance_uid) if d.destination == "broken"]
    assert row.state is DeliveryState.PENDING and row.next_attempt_at > clock()
    assert row.last_error is not None and row.last_error.startswith("forwarding failed unexpectedly: ValueError")
    [alarm] = fwd.alarms.active()
    assert (alarm.code, alarm.key) == ("forward-pass-failed", "broken")


def test_the_run_loop_lives_on_through_unexpected_errors(spool: Spool, scp_factory: Callable[..., ScriptedSCP],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    good = scp_factory()
    _explode_for(monkeypatch, "broken", RuntimeError("a bug"))
    fwd = Forwarder(spool, [dest(free_port(), "broken"), dest(good.port, "main")], calling_ae="DXGATE",
                    backoff_base_s=0.01, backoff_max_s=0.02)
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=fwd.run, args=(stop, wake), daemon=True)
    thread.start()
    objs = [make_object(seed=seed) for seed in (22, 23, 24)]
    try:
        for obj in objs:  # several passes, each meeting the bug again
            good.received.clear()
            put(spool, obj, ("broken", "main"))
            wake.set()
            assert good.received.wait(30), "the healthy destination stopped being served"
            assert thread.is_alive()
        assert fwd.alarms.raised["forward-pass-failed"] >= 3 and fwd.healthy()
        assert fwd.last_pass_completed is not None
    finally:
        stop.set()
        wake.set()
        thread.join(10)
    assert not thread.is_alive()
    assert sorted(good.stored) == sorted(o.sop_instance_uid for o in objs)
    assert {d.state for u in good.stored for d in spool.deliveries(u) if d.destination == "broken"} == {
        DeliveryState.PENDING}


def test_a_backlog_larger_than_a_batch_is_drained_in_one_pass(spool: Spool, clock: FakeClock,
                                                            scp_factory: Callable[..., ScriptedSCP]) -> None:
    scp = scp_factory()
    objs = [make_object(seed=40 + i) for i in range(7)]
    for o in objs:
        put(spool, o)
    results = forwarder(spool, clock, dest(scp.port), batch_size=3).forward_due()
    assert [r.outcome for r in results] == [Outcome.SENT] * 7
    assert scp.associations == 3 and sorted(scp.stored) == sorted(o.sop_instance_uid for o in objs)


def test_health_reports_a_pass_stuck_beyond_its_bound(spool: Spool, scp_factory: Callable[..., ScriptedSCP]) -> None:
    """The watchdog's view: a pass that hangs (an archive that accepts and never answers) is
    reported unhealthy once it outlasts the bound; a finished pass is healthy again."""
    entered, release = threading.Event(), threading.Event()
    scp = scp_factory(behaviour=lambda n, e: (entered.set(), release.wait(30), 0x0000)[2])
    now = [100.0]
    fwd = Forwarder(spool, [dest(scp.port)], calling_ae="DXGATE", monotonic=lambda: now[0])
    assert fwd.healthy() and fwd.last_pass_completed is None
    put(spool, make_object(seed=50))
    worker = threading.Thread(target=fwd.forward_due, daemon=True)
    worker.start()
    try:
        assert entered.wait(30)
        now[0] += 59.0
        assert fwd.healthy(stuck_after_s=60.0)
        now[0] += 2.0
        assert not fwd.healthy(stuck_after_s=60.0)
        assert fwd.healthy()  # 61 s: within the default bound, 10 x the destination's timeout + 60 s
        now[0] += 100.0
        assert not fwd.healthy()  # 161 s: beyond it
    finally:
        release.set()
        worker.join(30)
    assert fwd.healthy() and fwd.last_pass_completed == now[0]
