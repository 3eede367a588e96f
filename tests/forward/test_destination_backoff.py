"""Backoff belongs to the destination; a hung destination delays no other (DESIGN.md).

Seen from the archives' side: files DCMTK storescp wrote, connections a listening socket
accepted, associations a pynetdicom SCP was asked for. Clocks are injected; nothing sleeps.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.config import DestinationConfig
from gateway.forward import DeliveryResult, Forwarder, Outcome
from gateway.spool import DeliveryState, Spool
from tests.forward.conftest import FakeClock
from tests.forward.scp import ScriptedSCP
from tests.peers import STORESCP, StoreSCP, _start, require, wait_for_port
from tests.spool.objects import make_object, put


class TickingClock(FakeClock):
    """A clock that moves on at every reading, as a real one does between two rows."""

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


@dataclass
class StoreSCPOnPort(StoreSCP):
    """DCMTK storescp on a chosen port: the archive that comes back where it was."""

    def start(self) -> StoreSCPOnPort:
        exe = require(STORESCP)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = self.root / "storescp.log"
        self.proc = _start([exe, "--aetitle", self.aet, "--output-directory", str(self.out_dir),
                            "--max-pdu", "131072", "--filename-extension", ".dcm", str(self.port)], log, self.root)
        wait_for_port(self.port, self.proc, log)
        return self


@dataclass
class Listener:
    """A plain TCP socket on loopback. `hang`: accepts and never answers (reads nothing, writes
    nothing); otherwise it accepts and closes at once, an archive that is not there."""

    hang: bool
    port: int = 0
    accepted: int = 0
    connected: threading.Event = field(default_factory=threading.Event)
    conns: list[socket.socket] = field(default_factory=list)
    _sock: socket.socket = field(default_factory=socket.socket)

    def start(self) -> Listener:
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            self.accepted += 1  # counted before the client can see anything happen
            if self.hang:
                self.conns.append(conn)
                self.connected.set()
            else:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # a reset: the association attempt fails at once

    def close(self) -> None:
        self._sock.close()
        for c in self.conns:
            c.close()


@contextmanager
def listening(hang: bool) -> Iterator[Listener]:
    peer = Listener(hang).start()
    try:
        yield peer
    finally:
        peer.close()


def dest(port: int, name: str = "pacs", aet: str = "STORESCP", timeout_s: float = 10.0) -> DestinationConfig:
    return DestinationConfig(name=name, host="127.0.0.1", port=port, called_ae=aet, timeout_s=timeout_s)


def forwarder(spool: Spool, clock: Callable[[], float], *dests: DestinationConfig, **kw: object) -> Forwarder:
    return Forwarder(spool, dests, calling_ae="DXGATE", clock=clock, rng=random.Random(3), **kw)  # type: ignore[arg-type]


def pending_times(spool: Spool, uids: list[str]) -> set[float]:
    rows = [d for u in uids for d in spool.deliveries(u)]
    assert {d.state for d in rows} == {DeliveryState.PENDING}
    return {d.next_attempt_at for d in rows}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ticking(tmp_path: Path) -> Iterator[tuple[TickingClock, Spool]]:
    clock = TickingClock()
    s = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=clock)
    yield clock, s
    s.close()


@pytest.mark.peers
def test_after_an_outage_the_backlog_has_one_retry_time_and_the_archive_gets_all_of_it_in_one_pass(
        ticking: tuple[TickingClock, Spool], tmp_path: Path) -> None:
    clock, spool = ticking
    port = free_port()  # the archive is down: nothing listens
    backlog = [make_object(32, 32, seed=i) for i in range(50)]
    for o in backlog:
        put(spool, o)
    fwd = forwarder(spool, clock, dest(port))
    assert [r.outcome for r in fwd.forward_due()] == [Outcome.RETRY] * 50
    [retry_at] = pending_times(spool, [o.sop_instance_uid for o in backlog])  # ONE time for all 50
    assert retry_at > clock()
    late = [make_object(32, 32, seed=100 + i) for i in range(5)]
    for o in late:  # exposures during the outage join the backlog's time
        put(spool, o)
    assert pending_times(spool, [o.sop_instance_uid for o in backlog + late]) == {retry_at}

    archive = StoreSCPOnPort(tmp_path / "archive", port=port).start()  # the archive comes back
    try:
        clock.t = retry_at
        results = fwd.forward_due()  # ONE pass at the retry time delivers everything
        received = len(archive.files())
    finally:
        archive.stop()
    assert received == 55  # the archive's own view: a file per instance
    assert sorted(r.outcome for r in results) == [Outcome.SENT] * 55
    assert spool.counts() == {"pending": 0, "sending": 0, "sent": 55, "committed": 0, "quarantined": 0}


@pytest.mark.peers
def test_the_first_success_releases_the_whole_backlog_at_once(
        ticking: tuple[TickingClock, Spool], storescp: StoreSCP) -> None:
    """An operator retries one image while the archive's backoff runs: it goes through, and
    the archive gets the whole backlog in the same pass, not at each row's own time."""
    clock, spool = ticking
    backlog = [make_object(32, 32, seed=200 + i) for i in range(20)]
    for o in backlog:
        put(spool, o)
    fwd = forwarder(spool, clock, dest(free_port()))  # first: an address where nothing answers
    for _ in range(3):  # three failed passes: a long backoff
        fwd.forward_due()
        [retry_at] = pending_times(spool, [o.sop_instance_uid for o in backlog])
        clock.t = retry_at
    fwd.forward_due()
    [retry_at] = pending_times(spool, [o.sop_instance_uid for o in backlog])
    assert retry_at - clock() > 4.0
    fwd.reconfigure([dest(storescp.port)])  # the archive is reachable (again)
    spool.retry_now(backlog[7].sop_instance_uid, "pacs")
    results = fwd.forward_due()
    assert len(storescp.files()) == 20  # the archive's own view
    assert sorted(r.outcome for r in results) == [Outcome.SENT] * 20
    assert clock() < retry_at  # all of it before the retry time the backlog had
    assert spool.backoff("pacs") is None


def test_new_images_during_an_outage_make_no_connection_attempt_before_the_retry_time(
        spool: Spool, clock: FakeClock) -> None:
    with listening(hang=False) as archive:  # accepts TCP and resets: the PACS is not there
        put(spool, make_object(32, 32, seed=300))
        fwd = forwarder(spool, clock, dest(archive.port))
        [first] = fwd.forward_due()
        assert first.outcome is Outcome.RETRY and archive.accepted == 1
        [retry_at] = pending_times(spool, [first.uid])
        uids = [first.uid]
        for i in range(5):  # an exposure every 0.1 s during the outage, each waking the forwarder
            clock.advance(0.1)
            uids.append(put(spool, make_object(32, 32, seed=301 + i)).sop_instance_uid)
            fwd.forward_due()
            assert archive.accepted == 1  # no connection attempt before the destination's retry time
        assert pending_times(spool, uids) == {retry_at}  # the new images joined the backoff
        clock.t = retry_at
        assert [r.outcome for r in fwd.forward_due()] == [Outcome.RETRY] * 6  # one attempt for all six
        assert archive.accepted == 2
        [again] = pending_times(spool, uids)
        assert again > clock()
        backoff = spool.backoff("pacs")
        assert backoff is not None and (backoff.failures, backoff.retry_at) == (2, again)


def test_a_processing_failure_holds_only_its_object_then_quarantines_it(
        spool: Spool, clock: FakeClock, scp_factory: Callable[..., ScriptedSCP]) -> None:
    bad, good = make_object(32, 32, seed=400), make_object(32, 32, seed=401)
    scp = scp_factory(aet="STORESCP", behaviour=lambda _n, e: 0x0110 if str(e.dataset.SOPInstanceUID) ==
                      bad.sop_instance_uid else 0x0000)
    put(spool, bad)
    put(spool, good)
    fwd = forwarder(spool, clock, dest(scp.port))
    first = {r.uid: r.outcome for r in fwd.forward_due()}
    assert first == {bad.sop_instance_uid: Outcome.RETRY, good.sop_instance_uid: Outcome.SENT}
    assert scp.stored == [good.sop_instance_uid] and spool.backoff("pacs") is None
    clock.advance(3600)
    [second] = fwd.forward_due()
    assert (second.uid, second.outcome) == (bad.sop_instance_uid, Outcome.QUARANTINED)
    assert "0x0110" in (second.error or "")


def test_a_hung_destination_delays_no_other_and_shutdown_cuts_its_attempt(
        spool: Spool, scp_factory: Callable[..., ScriptedSCP]) -> None:
    good = scp_factory(aet="STORESCP")
    with listening(hang=True) as hung:  # accepts TCP, then never reads or answers a byte
        # the hung one comes first, as the old single thread served them; its timeout is long
        fwd = Forwarder(spool, [dest(hung.port, "hung", timeout_s=60.0), dest(good.port, "good")],
                        calling_ae="DXGATE", stop_grace_s=0.2)
        seen: list[DeliveryResult] = []
        recorded = threading.Event()

        def on_result(result: DeliveryResult) -> None:
            seen.append(result)
            if result.destination == "good":
                recorded.set()

        fwd.on_result = on_result
        obj = make_object(32, 32, seed=500)
        put(spool, obj, ("hung", "good"))
        stop, wake = threading.Event(), threading.Event()
        thread = threading.Thread(target=fwd.run, args=(stop, wake), daemon=True)
        thread.start()
        try:
            assert hung.connected.wait(10), "the hung destination was never tried"
            assert good.received.wait(8), "the healthy destination waited for the hung one"
            assert recorded.wait(8)
            assert good.stored == [obj.sop_instance_uid]
            assert [(r.destination, r.outcome) for r in seen] == [("good", Outcome.SENT)]  # hung: still trying
            assert fwd.healthy()  # within its bound: not reported stuck
        finally:
            stop.set()
            wake.set()
            thread.join(10)
        assert not thread.is_alive()
        # shutdown did not wait out the 60 s timeout: the hung association was cut (EOF at the peer)
        [conn] = hung.conns
        conn.settimeout(5)
        while data := conn.recv(65536):  # the A-ASSOCIATE-RQ, then the end of the connection
            assert data
        assert not [t for t in threading.enumerate() if t.name == "dxgate-forward-hung"]
    [row] = [d for d in spool.deliveries(obj.sop_instance_uid) if d.destination == "hung"]
    assert row.state is DeliveryState.PENDING and row.attempts == 0  # cut at shutdown: unknown, untouched
