"""The direct P-DATA path (gateway.forward.pdata) and parallel associations, against the real
archives: DCMTK storescp and Orthanc, and a pynetdicom SCP counting associations."""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from gateway.config import DestinationConfig
from gateway.forward import Forwarder, Outcome, pdata, scu
from gateway.spool import Delivery, DeliveryState, Spool
from tests.forward.conftest import FakeClock
from tests.forward.pdu_proxy import P_DATA_TF, PduProxy
from tests.forward.scp import ScriptedSCP
from tests.forward.test_tls import Pki
from tests.peers import Orthanc, StoreSCP
from tests.spool.objects import make_object, put

pytestmark = pytest.mark.peers


def dataset_bytes(data: bytes) -> bytes:
    """A Part-10 file's dataset: the bytes after its File Meta Information."""
    fh = io.BytesIO(data)
    return data[pdata.dataset_offset(fh):]


def destination(port: int, aet: str, **kw: object) -> DestinationConfig:
    return DestinationConfig(name="pacs", host="127.0.0.1", port=port, called_ae=aet, timeout_s=20.0, **kw)


def forwarder(spool: Spool, clock: FakeClock, dest: DestinationConfig) -> Forwarder:
    return Forwarder(spool, [dest], calling_ae="DXGATE", clock=clock, rng=random.Random(3))


@pytest.fixture(autouse=True)
def fast_stores(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SOP Instance UIDs the direct path sent (so each test knows it ran, not pynetdicom's)."""
    calls: list[str] = []
    real = pdata.PDataSender.store

    def store(self: pdata.PDataSender, path: str, expected: pdata.Expected, *args: object) -> int | None:
        calls.append(expected.sop_instance_uid)
        return real(self, path, expected, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pdata.PDataSender, "store", store)
    return calls


def spool_path(spool: Spool, uid: str) -> Path:
    instance = spool.instance(uid)
    assert instance is not None
    return Path(instance.path)


def spooled_datasets(spool: Spool, uids: list[str]) -> dict[str, bytes]:
    return {uid: dataset_bytes(spool_path(spool, uid).read_bytes()) for uid in uids}


def received_datasets(storescp: StoreSCP) -> dict[str, bytes]:
    out = {}
    for f in storescp.files():
        data = f.read_bytes()
        out[str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = dataset_bytes(data)
    return out


@pytest.fixture
def small_pdu_storescp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreSCP]:
    """storescp that accepts PDUs of at most 16384 bytes (the last --max-pdu wins)."""
    peer = StoreSCP(tmp_path_factory.mktemp("storescp16k"), args=("--max-pdu", "16384")).start()
    try:
        yield peer
    finally:
        peer.stop()


def test_images_reach_storescp_byte_identical_in_pdus_within_its_max_pdu(
        spool: Spool, clock: FakeClock, small_pdu_storescp: StoreSCP, fast_stores: list[str]) -> None:
    objs = [make_object(300, 257, seed=i) for i in range(3)]  # ~154 kB each: ten PDUs of 16 kB and a short one
    for o in objs:
        put(spool, o)
    proxy = PduProxy(small_pdu_storescp.port).start()
    try:
        fwd = forwarder(spool, clock, destination(proxy.port, small_pdu_storescp.aet, max_pdu=131072))
        results = fwd.forward_due()
    finally:
        proxy.stop()
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    uids = [o.sop_instance_uid for o in objs]
    assert fast_stores == uids
    assert received_datasets(small_pdu_storescp) == spooled_datasets(spool, uids)
    lengths = proxy.data_pdu_lengths()
    assert max(lengths) <= 16384  # the archive's maximum (PS3.8 9.3.5), though dxgate offered 131072
    assert lengths.count(16384) >= 3 * 9  # and the stream fills each PDU up to it
    # every image's dataset ends with exactly one last fragment: one per image
    last_data = [c for _n, t, _l, cs in proxy.pdus if t == P_DATA_TF for c in cs if c == 0x02]
    assert len(last_data) == 3


def test_orthanc_stores_byte_identical_datasets_sent_straight_from_the_spool(
        spool: Spool, clock: FakeClock, orthanc: Orthanc, fast_stores: list[str]) -> None:
    objs = [make_object(512, 384, seed=40 + i) for i in range(3)]
    for o in objs:
        put(spool, o)
    fwd = forwarder(spool, clock, destination(orthanc.dicom_port, orthanc.aet, associations=2))
    assert sorted(r.outcome for r in fwd.forward_due()) == [Outcome.SENT] * 3
    spooled = spooled_datasets(spool, [o.sop_instance_uid for o in objs])
    assert sorted(fast_stores) == sorted(spooled)
    for o in objs:
        oid = orthanc.find_instance(o.sop_instance_uid)
        assert oid is not None
        assert dataset_bytes(orthanc.instance_file(oid)) == spooled[o.sop_instance_uid]


def test_a_connection_cut_mid_image_resends_the_same_bytes(
        spool: Spool, clock: FakeClock, storescp: StoreSCP) -> None:
    objs = [make_object(600, 500, seed=60 + i) for i in range(3)]  # 600 kB: five PDUs of 128 kB each
    for o in objs:
        put(spool, o)
    per_image = -(-len(dataset_bytes(objs[0].data)) // (131072 - 6))
    proxy = PduProxy(storescp.port, cut_after=(1, per_image + 2)).start()  # inside the second image
    try:
        fwd = forwarder(spool, clock, destination(proxy.port, storescp.aet))
        first = fwd.forward_due()
        assert proxy.cuts == 1
        assert [(r.uid, r.outcome) for r in first][:2] == [(objs[0].sop_instance_uid, Outcome.SENT),
                                                            (objs[1].sop_instance_uid, Outcome.RETRY)]
        assert {p.name for p in storescp.files()} and len(storescp.files()) == 1  # nothing half-stored
        clock.advance(3600)
        second = fwd.forward_due()
    finally:
        proxy.stop()
    assert sorted(r.uid for r in second) == sorted(o.sop_instance_uid for o in objs[1:])
    assert all(r.outcome is Outcome.SENT for r in second)
    uids = [o.sop_instance_uid for o in objs]
    assert received_datasets(storescp) == spooled_datasets(spool, uids)  # each once, identical bytes
    assert len(storescp.files()) == 3


def test_a_spool_file_corrupted_after_it_was_committed_never_completes_at_the_archive(
        spool: Spool, clock: FakeClock, storescp: StoreSCP, fast_stores: list[str]) -> None:
    objs = [make_object(400, 400, seed=80 + i) for i in range(3)]
    for o in objs:
        put(spool, o)
    bad = spool_path(spool, objs[1].sop_instance_uid)
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0x01  # the last pixel byte, same size: only the digest can tell
    bad.chmod(0o600)
    bad.write_bytes(bytes(data))
    fwd = forwarder(spool, clock, destination(storescp.port, storescp.aet))
    results = {r.uid: r for r in fwd.forward_due()}
    assert results[objs[1].sop_instance_uid].outcome is Outcome.QUARANTINED
    assert "xxh3_128" in (results[objs[1].sop_instance_uid].error or "")  # the fast digest caught it
    assert {results[o.sop_instance_uid].outcome for o in (objs[0], objs[2])} == {Outcome.SENT}
    assert fast_stores == [o.sop_instance_uid for o in objs]  # the corrupt one streamed, then held back
    got = received_datasets(storescp)  # the archive's own view
    assert set(got) == {objs[0].sop_instance_uid, objs[2].sop_instance_uid}


def test_parallel_associations_deliver_each_image_exactly_once(
        spool: Spool, clock: FakeClock, scp_factory: Callable[..., ScriptedSCP]) -> None:
    scp = scp_factory()
    objs = [make_object(256, 256, seed=100 + i) for i in range(12)]
    for o in objs:
        put(spool, o)
    fwd = forwarder(spool, clock, destination(scp.port, scp.aet, associations=3))
    results = fwd.forward_due()
    uids = sorted(o.sop_instance_uid for o in objs)
    assert sorted(r.uid for r in results) == uids and {r.outcome for r in results} == {Outcome.SENT}
    assert scp.associations == 3
    assert sorted(scp.stored) == uids  # each once: no duplicate, none missing
    assert {d.destination: d.state for d in spool.deliveries(uids[0])} == {"pacs": DeliveryState.SENT}
    by_uid = {o.sop_instance_uid: o for o in objs}
    for ds in scp.datasets:
        assert ds.PixelData == by_uid[str(ds.SOPInstanceUID)].pixels.tobytes()


def test_parallel_associations_to_storescp_leave_one_identical_file_per_image(
        spool: Spool, clock: FakeClock, storescp: StoreSCP) -> None:
    objs = [make_object(300, 300, seed=130 + i) for i in range(8)]
    for o in objs:
        put(spool, o)
    fwd = forwarder(spool, clock, destination(storescp.port, storescp.aet, associations=2))
    assert {r.outcome for r in fwd.forward_due()} == {Outcome.SENT}
    uids = [o.sop_instance_uid for o in objs]
    assert len(storescp.files()) == 8
    assert received_datasets(storescp) == spooled_datasets(spool, uids)


def test_an_archive_refusing_further_associations_gets_the_backlog_over_the_one_it_accepted(
        spool: Spool, clock: FakeClock, scp_factory: Callable[..., ScriptedSCP]) -> None:
    scp = scp_factory(max_associations=1)
    objs = [make_object(200, 200, seed=150 + i) for i in range(6)]
    for o in objs:
        put(spool, o)
    fwd = forwarder(spool, clock, destination(scp.port, scp.aet, associations=3))
    results = fwd.forward_due()
    uids = sorted(o.sop_instance_uid for o in objs)
    assert sorted(r.uid for r in results) == uids and {r.outcome for r in results} == {Outcome.SENT}
    assert sorted(scp.stored) == uids
    assert scp.associations == 3  # two of them refused (the SCP's limit) while the first was open
    assert spool.backoff("pacs") is None  # a refused extra association is not the destination failing


@pytest.fixture
def tls_scp(tmp_path: Path) -> Iterator[tuple[Pki, StoreSCP]]:
    """storescp speaking DICOM TLS only, with a certificate from a test CA."""
    (tmp_path / "pki").mkdir()
    site = Pki(tmp_path / "pki", "site")
    scp = StoreSCP(tmp_path / "scp", tls=(site.server_key, site.server_cert, None))
    scp.root.mkdir()
    scp.start()
    try:
        yield site, scp
    finally:
        scp.stop()


def test_under_tls_pynetdicom_sends_and_the_images_arrive_identical(
        spool: Spool, clock: FakeClock, tls_scp: tuple[Pki, StoreSCP], fast_stores: list[str]) -> None:
    site, scp = tls_scp
    objs = [make_object(300, 300, seed=170 + i) for i in range(2)]
    for o in objs:
        put(spool, o)
    dest = destination(scp.port, scp.aet, tls=True, tls_ca_file=str(site.ca_file))
    assert [r.outcome for r in forwarder(spool, clock, dest).forward_due()] == [Outcome.SENT] * 2
    assert fast_stores == []  # the socket is pynetdicom's SSL socket: its own path, not the direct one
    uids = [o.sop_instance_uid for o in objs]
    assert received_datasets(scp) == spooled_datasets(spool, uids)


def test_an_outcome_recorded_while_the_next_image_goes_out_is_recorded_before_a_failure(
        spool: Spool, clock: FakeClock, scp_factory: Callable[..., ScriptedSCP],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first image's record (on the recording thread) must be complete before the second
    image's abort backs the destination off: else its late 'the archive answers' would
    release the backlog the abort just held back."""
    scp = scp_factory(behaviour=lambda n, _event: None if n == 1 else 0x0000)
    objs = [make_object(128, 128, seed=190 + i) for i in range(3)]
    for o in objs:
        put(spool, o)
    backing_off = threading.Event()
    mark_sent, back_off = spool.mark_sent, spool.back_off

    def slow_mark_sent(*args: Any, **kw: Any) -> Any:
        backing_off.wait(0.5)  # a record still in flight when the failure comes (if that can happen)
        return mark_sent(*args, **kw)

    def noted_back_off(*args: Any, **kw: Any) -> Any:
        backing_off.set()
        return back_off(*args, **kw)

    monkeypatch.setattr(spool, "mark_sent", slow_mark_sent)
    monkeypatch.setattr(spool, "back_off", noted_back_off)
    results = forwarder(spool, clock, destination(scp.port, scp.aet)).forward_due()
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.RETRY, Outcome.RETRY]
    backoff = spool.backoff("pacs")
    assert backoff is not None and backoff.retry_at > clock()
    assert spool.due("pacs", clock(), 10) == []  # the backlog waits for its retry time


def test_under_tls_a_spool_file_corrupted_after_it_was_committed_never_reaches_the_archive(
        spool: Spool, clock: FakeClock, tls_scp: tuple[Pki, StoreSCP], fast_stores: list[str]) -> None:
    """pynetdicom's path (TLS) checks the same fast digest before the object goes out."""
    site, scp = tls_scp
    objs = [make_object(300, 300, seed=200 + i) for i in range(3)]
    for o in objs:
        put(spool, o)
    bad = spool_path(spool, objs[1].sop_instance_uid)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x10  # one pixel bit mid-file, same size
    bad.chmod(0o600)
    bad.write_bytes(bytes(data))
    dest = destination(scp.port, scp.aet, tls=True, tls_ca_file=str(site.ca_file))
    results = {r.uid: r for r in forwarder(spool, clock, dest).forward_due()}
    assert fast_stores == []  # pynetdicom sent (or refused) every one
    assert results[objs[1].sop_instance_uid].outcome is Outcome.QUARANTINED
    assert "xxh3_128" in (results[objs[1].sop_instance_uid].error or "")
    assert {results[o.sop_instance_uid].outcome for o in (objs[0], objs[2])} == {Outcome.SENT}
    good = [objs[0].sop_instance_uid, objs[2].sop_instance_uid]
    assert received_datasets(scp) == spooled_datasets(spool, good)  # the archive's own view: not the corrupt one


def test_under_tls_what_leaves_is_the_bytes_checked_not_a_second_read_of_the_file(
        spool: Spool, clock: FakeClock, tls_scp: tuple[Pki, StoreSCP], monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is corrupted right after its check: the archive still gets what was checked."""
    site, scp = tls_scp
    o = make_object(300, 300, seed=210)
    put(spool, o)
    path = spool_path(spool, o.sop_instance_uid)
    checked = dataset_bytes(path.read_bytes())
    real = scu.verify

    def verify_then_corrupt(delivery: Delivery) -> bytes:
        data = real(delivery)
        bad = bytearray(path.read_bytes())
        bad[len(bad) // 2] ^= 0x10
        path.chmod(0o600)
        path.write_bytes(bytes(bad))
        return data

    monkeypatch.setattr(scu, "verify", verify_then_corrupt)
    dest = destination(scp.port, scp.aet, tls=True, tls_ca_file=str(site.ca_file))
    assert [r.outcome for r in forwarder(spool, clock, dest).forward_due()] == [Outcome.SENT]
    assert received_datasets(scp) == {o.sop_instance_uid: checked}


def test_a_spool_file_replaced_by_another_instance_is_refused_before_a_byte_leaves(
        spool: Spool, clock: FakeClock, storescp: StoreSCP, fast_stores: list[str]) -> None:
    by_size: dict[int, list[Any]] = {}
    for seed in range(220, 240):  # UIDs differ in length: find two files of the same size
        o = make_object(200, 200, seed=seed)
        by_size.setdefault(len(o.data), []).append(o)
        if len(by_size[len(o.data)]) == 2:
            break
    first, second = by_size[len(o.data)]
    third = make_object(200, 200, seed=250)
    for obj in (first, second, third):
        put(spool, obj)
    victim = spool_path(spool, second.sop_instance_uid)
    victim.chmod(0o600)
    victim.write_bytes(first.data)  # same size, another instance's file
    results = {r.uid: r for r in forwarder(spool, clock, destination(storescp.port, storescp.aet)).forward_due()}
    refused = results[second.sop_instance_uid]
    assert refused.outcome is Outcome.QUARANTINED
    assert f"holds SOP Instance UID {first.sop_instance_uid}" in (refused.error or "")
    assert {results[o.sop_instance_uid].outcome for o in (first, third)} == {Outcome.SENT}
    got = received_datasets(storescp)  # the archive's own view: each image once, none twice
    assert len(storescp.files()) == 2
    assert got == spooled_datasets(spool, [first.sop_instance_uid, third.sop_instance_uid])
