"""The fast digest (xxh3_128) a spool file is checked against before it leaves: recorded at put,
added to state databases from before it, and replaced by the sha256 for rows without it."""

from __future__ import annotations

import hashlib
import io
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info

from gateway.config import DestinationConfig
from gateway.forward import Forwarder, Outcome, pdata, scu
from gateway.spool import DeliveryState, Spool, files
from tests.forward.conftest import FakeClock
from tests.peers import StoreSCP
from tests.spool.objects import DX_FOR_PRESENTATION, SECONDARY_CAPTURE, make_object, put


def open_spool(tmp_path: Path, clock: FakeClock) -> Spool:
    return Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(tmp_path: Path, clock: FakeClock) -> Iterator[Spool]:
    s = open_spool(tmp_path, clock)
    yield s
    s.close()


def rows(database: Path, table: str) -> list[dict[str, Any]]:
    """A table's rows as SQLite holds them, read on a connection of the test's own."""
    conn = sqlite3.connect(database)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"select * from {table} order by rowid")]
    finally:
        conn.close()


def execute(database: Path, sql: str) -> None:
    conn = sqlite3.connect(database)
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def forget_fast_digests(database: Path) -> None:
    """Make the state database what a dxgate from before the fast digest left: no such column."""
    execute(database, "alter table instances drop column xxh3_128")


def test_put_records_the_xxh3_128_of_the_file_it_made_durable(spool: Spool) -> None:
    obj = make_object(seed=1)
    saved = put(spool, obj)
    on_disk = Path(saved.path).read_bytes()
    assert on_disk == obj.data
    truth = xxhash.xxh3_128(on_disk).hexdigest()  # computed here, from the bytes on disk
    assert saved.xxh3_128 == truth and len(truth) == 32
    assert saved.sha256 == hashlib.sha256(on_disk).hexdigest()  # the identity stays the sha256
    [row] = rows(spool.database, "instances")
    assert row["xxh3_128"] == truth
    [delivery] = spool.deliveries(obj.sop_instance_uid)
    assert delivery.xxh3_128 == truth  # what the forwarder gets to check the file against


def test_a_state_database_from_before_the_fast_digest_keeps_every_row_and_gains_the_column(
        tmp_path: Path, clock: FakeClock) -> None:
    old = [make_object(seed=10 + i) for i in range(3)]
    with open_spool(tmp_path, clock) as spool:
        for o in old:
            put(spool, o, ("pacs", "backup"))
        spool.mark_sending("pacs", [old[0].sop_instance_uid], clock())
        spool.mark_sent(old[0].sop_instance_uid, "pacs", 0x0000, clock())
        database = spool.database
    forget_fast_digests(database)
    instances_before, deliveries_before = rows(database, "instances"), rows(database, "deliveries")
    assert "xxh3_128" not in instances_before[0]

    with open_spool(tmp_path, clock) as spool:
        instances_after, deliveries_after = rows(database, "instances"), rows(database, "deliveries")
        assert [{k: v for k, v in r.items() if k != "xxh3_128"} for r in instances_after] == instances_before
        assert [r["xxh3_128"] for r in instances_after] == [None] * 3  # unknown for the old rows
        assert deliveries_after == deliveries_before
        assert spool.recovery.missing_files == () and spool.recovery.unreferenced_files == ()
        assert {d.destination: d.state for d in spool.deliveries(old[0].sop_instance_uid)} == {
            "backup": DeliveryState.PENDING, "pacs": DeliveryState.SENT}
        assert {d.xxh3_128 for o in old for d in spool.deliveries(o.sop_instance_uid)} == {None}
        new = make_object(seed=20)
        saved = put(spool, new)
        assert saved.xxh3_128 == xxhash.xxh3_128(new.data).hexdigest()  # new rows get it
        assert put(spool, old[1]).xxh3_128 is None  # an idempotent re-put leaves an old row as it was


def digest_by_pieces(path: Path, size: int, sha256: str, xxh3_128: str | None,
                     pieces: tuple[tuple[str, int], ...]) -> str | None:
    """A FileDigest of a file fed as a sender feeds it, in file order: ("read", up to) read by the
    digest, ("update", up to) read here and handed in; then compared."""
    with open(path, "rb") as fh:
        digest = files.FileDigest(fh.fileno(), size, sha256, xxh3_128)
        position = 0
        for how, end in pieces:
            if how == "read":
                digest.read(end)
            else:
                fh.seek(position)
                digest.update(memoryview(fh.read(end - position)))
            position = max(position, end)
        return digest.mismatch()


PIECES = (
    (),  # all read by the digest (the pynetdicom path's check)
    (("read", 132), ("update", 4096), ("update", 3 * 4096 + 5), ("update", 40_000)),  # as the direct path
    (("read", 144), ("update", 50_000)),  # every dataset byte handed in
    (("read", 9000), ("read", 8000), ("update", 49_999)),  # a step back is ignored
)


@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("flip", [0, 200, 4096, 9000, 39_999, 40_000, 49_999])
def test_every_byte_counts_whether_read_by_the_digest_or_handed_in(
        tmp_path: Path, pieces: tuple[tuple[str, int], ...], flip: int) -> None:
    data = random.Random(flip).randbytes(50_000)
    good = tmp_path / "good"
    good.write_bytes(data)
    bad = tmp_path / "bad"
    bad.write_bytes(data[:flip] + bytes([data[flip] ^ 0x80]) + data[flip + 1:])
    fast, sha = xxhash.xxh3_128(data).hexdigest(), hashlib.sha256(data).hexdigest()
    for recorded, name in ((fast, "xxh3_128"), (None, "sha256")):
        assert digest_by_pieces(good, len(data), sha, recorded, pieces) is None
        assert digest_by_pieces(bad, len(data), sha, recorded, pieces) == name


def test_a_file_shorter_or_longer_than_committed_does_not_match(tmp_path: Path) -> None:
    data = random.Random(5).randbytes(10_000)
    fast, sha = xxhash.xxh3_128(data).hexdigest(), hashlib.sha256(data).hexdigest()
    short = tmp_path / "short"
    short.write_bytes(data[:-1])
    assert "shorter" in (digest_by_pieces(short, len(data), sha, fast, ()) or "")
    assert "shorter" in (digest_by_pieces(short, len(data), sha, fast, (("update", 5000),)) or "")
    long = tmp_path / "long"
    long.write_bytes(data + b"\x00")
    assert digest_by_pieces(long, len(data), sha, fast, ()) is None  # the committed size is what counts
    assert digest_by_pieces(long, len(data), sha, fast, (("update", len(data) + 1),)) == "xxh3_128"


@pytest.fixture(params=["direct", "pynetdicom"])
def send_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Which path sends: the direct P-DATA sender, or pynetdicom's (as under TLS). Yields the
    UIDs the direct path was asked to store."""
    calls: list[str] = []
    real = pdata.PDataSender.store

    def store(self: pdata.PDataSender, path: str, expected: pdata.Expected, *args: Any) -> int | None:
        calls.append(expected.sop_instance_uid)
        return real(self, path, expected, *args)

    monkeypatch.setattr(pdata.PDataSender, "store", store)
    if request.param == "pynetdicom":
        monkeypatch.setattr(scu, "fast_sender", lambda *_args: None)
    yield calls
    assert bool(calls) == (request.param == "direct")  # the path named is the one that ran


def dataset(data: bytes) -> bytes:
    """A Part-10 file's dataset: the bytes after its File Meta Information."""
    return data[pdata.dataset_offset(io.BytesIO(data)):]


def received_datasets(storescp: StoreSCP) -> dict[str, bytes]:
    """SOP Instance UID -> dataset bytes, as storescp wrote them."""
    out = {}
    for f in storescp.files():
        data = f.read_bytes()
        out[str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = dataset(data)
    return out


@pytest.mark.peers
def test_rows_without_the_fast_digest_are_checked_by_their_sha256(
        tmp_path: Path, clock: FakeClock, storescp: StoreSCP, send_path: list[str]) -> None:
    objs = [make_object(300, 300, seed=30 + i) for i in range(3)]
    with open_spool(tmp_path, clock) as spool:
        paths = [Path(put(spool, o).path) for o in objs]
    forget_fast_digests(tmp_path / "state.db")  # spooled by a dxgate from before the fast digest
    bad = paths[1]
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit mid-file, same size
    bad.chmod(0o600)
    bad.write_bytes(bytes(data))

    with open_spool(tmp_path, clock) as spool:
        dest = DestinationConfig(name="pacs", host="127.0.0.1", port=storescp.port, called_ae=storescp.aet,
                                 timeout_s=20.0)
        results = {r.uid: r for r in Forwarder(spool, [dest], calling_ae="DXGATE", clock=clock,
                                               rng=random.Random(1)).forward_due()}
    corrupt = results[objs[1].sop_instance_uid]
    assert corrupt.outcome is Outcome.QUARANTINED and "sha256" in (corrupt.error or "")
    assert "xxh3_128" not in (corrupt.error or "")  # no fast digest to check: the sha256 was
    assert {results[o.sop_instance_uid].outcome for o in (objs[0], objs[2])} == {Outcome.SENT}
    got = received_datasets(storescp)  # the archive's own view
    assert got == {o.sop_instance_uid: dataset(o.data) for o in (objs[0], objs[2])}  # intact, and only those


@pytest.mark.parametrize("sop_class", [DX_FOR_PRESENTATION, SECONDARY_CAPTURE])
def test_the_file_meta_read_directly_agrees_with_pydicom(tmp_path: Path, sop_class: str) -> None:
    for seed in range(6):  # UIDs of odd and even lengths
        obj = make_object(16, 16, seed=seed, sop_class_uid=sop_class)
        meta = pdata.read_meta(io.BytesIO(obj.data))
        path = tmp_path / f"{seed}.dcm"
        path.write_bytes(obj.data)
        truth = read_file_meta_info(path)
        assert meta.sop_instance_uid == truth.MediaStorageSOPInstanceUID == obj.sop_instance_uid
        assert meta.transfer_syntax == truth.TransferSyntaxUID
        assert meta.dataset_offset == 132 + 12 + truth.FileMetaInformationGroupLength  # PS3.10 7.1
        assert dcmread(io.BytesIO(obj.data[meta.dataset_offset:]), force=True).SOPInstanceUID == obj.sop_instance_uid


def test_a_file_that_is_not_part_10_has_no_file_meta() -> None:
    with pytest.raises(pdata.FileMismatch, match="DICM"):
        pdata.read_meta(io.BytesIO(b"\x00" * 200))
    obj = make_object(16, 16)
    for cut in (150, obj.data.index(obj.sop_instance_uid.encode()) + 3):  # in an element's header; in the UID
        with pytest.raises(pdata.FileMismatch, match="truncated"):
            pdata.read_meta(io.BytesIO(obj.data[:cut]))
