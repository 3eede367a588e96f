"""Lossless compression per destination: what the archive stored decodes to the original
pixels bit for bit, the SOP Instance UID stays, the spool keeps the uncompressed original,
and an archive that does not accept the syntax gets Explicit VR Little Endian."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from gateway.config import DestinationConfig
from gateway.forward import Forwarder, Outcome, scu
from gateway.spool import Spool
from tests.forward.conftest import FakeClock
from tests.peers import Orthanc, StoreSCP, dciodvfy_errors
from tests.spool.objects import TestObject, make_object, put

pytestmark = pytest.mark.peers

SYNTAXES = {"jpeg-ls-lossless": JPEGLSLossless, "jpeg2000-lossless": JPEG2000Lossless, "rle": RLELossless}


def full_range_objects(n: int, seed: int) -> list[TestObject]:
    """Non-square images using every one of the 14 stored bits, with edges and flat areas."""
    out = []
    for i in range(n):
        px = np.random.default_rng(seed + i).integers(0, 1 << 14, size=(97, 130), dtype=np.uint16)
        px[:, :7] = (1 << 14) - 1
        px[10:30, 40:90] = 1234
        px[0, 0] = 0
        out.append(make_object(pixels=px, seed=seed + i))
    return out


@pytest.fixture
def scp_with(tmp_path: Path) -> Iterator[Callable[..., StoreSCP]]:
    started: list[StoreSCP] = []

    def make(*args: str) -> StoreSCP:
        root = tmp_path / f"scp{len(started)}"
        root.mkdir()
        scp = StoreSCP(root, args=args).start()
        started.append(scp)
        return scp

    yield make
    for scp in started:
        scp.stop()


def forward(spool: Spool, clock: FakeClock, name: str, port: int, aet: str, syntax: str) -> list[Outcome]:
    fwd = Forwarder(spool, [DestinationConfig(name=name, host="127.0.0.1", port=port, called_ae=aet, timeout_s=20.0,
                                              transfer_syntax=syntax)],  # type: ignore[arg-type]
                    calling_ae="DXGATE", clock=clock, rng=random.Random(2))
    return [r.outcome for r in fwd.forward_due()]


def spool_unchanged(spool: Spool, objs: list[TestObject]) -> None:
    for o in objs:
        inst = spool.instance(o.sop_instance_uid)
        assert inst is not None
        data = Path(inst.path).read_bytes()
        assert data == o.data and hashlib.sha256(data).hexdigest() == inst.sha256
        assert dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@pytest.mark.parametrize("syntax", list(SYNTAXES))
def test_storescp_stores_the_compressed_syntax_and_it_decodes_bit_for_bit(
        spool: Spool, clock: FakeClock, scp_with: Callable[..., StoreSCP], syntax: str) -> None:
    scp = scp_with("+xa")  # accepts every syntax it knows; writes what it received
    objs = full_range_objects(2, seed=400)
    for o in objs:
        put(spool, o, ("archive",))
    assert forward(spool, clock, "archive", scp.port, scp.aet, syntax) == [Outcome.SENT] * 2
    got = {str(ds.SOPInstanceUID): (path, ds) for path in scp.files() for ds in [dcmread(path)]}
    assert set(got) == {o.sop_instance_uid for o in objs}  # the UID did not change
    for o in objs:
        path, ds = got[o.sop_instance_uid]
        assert ds.file_meta.TransferSyntaxUID == SYNTAXES[syntax]
        assert len(ds.PixelData) < o.pixels.nbytes  # really compressed, not relabelled
        assert np.array_equal(ds.pixel_array, o.pixels) and ds.pixel_array.dtype == o.pixels.dtype
        original = dcmread(io.BytesIO(o.data))
        for kw in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "BitsStored", "PhotometricInterpretation"):
            assert ds[kw].value == original[kw].value
        assert dciodvfy_errors(path) == []
    spool_unchanged(spool, objs)


def test_archive_without_the_syntax_gets_explicit_vr_little_endian(
        spool: Spool, clock: FakeClock, scp_with: Callable[..., StoreSCP]) -> None:
    scp = scp_with()  # storescp's defaults: uncompressed syntaxes only
    objs = full_range_objects(2, seed=420)
    for o in objs:
        put(spool, o, ("archive",))
    assert forward(spool, clock, "archive", scp.port, scp.aet, "jpeg-ls-lossless") == [Outcome.SENT] * 2
    for path in scp.files():
        ds = dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        o = next(o for o in objs if o.sop_instance_uid == ds.SOPInstanceUID)
        assert ds.PixelData == o.pixels.tobytes()
    assert len(scp.files()) == 2
    spool_unchanged(spool, objs)


@pytest.mark.parametrize("syntax", ["jpeg-ls-lossless", "jpeg2000-lossless"])
def test_orthanc_keeps_the_compressed_object_and_it_decodes_bit_for_bit(
        spool: Spool, clock: FakeClock, orthanc: Orthanc, syntax: str) -> None:
    objs = full_range_objects(2, seed=440 + len(syntax))
    for o in objs:
        put(spool, o, ("orthanc",))
    assert forward(spool, clock, "orthanc", orthanc.dicom_port, orthanc.aet, syntax) == [Outcome.SENT] * 2
    for o in objs:
        oid = orthanc.find_instance(o.sop_instance_uid)
        assert oid is not None
        ds = dcmread(io.BytesIO(orthanc.instance_file(oid)))
        assert ds.file_meta.TransferSyntaxUID == SYNTAXES[syntax]
        assert np.array_equal(ds.pixel_array, o.pixels)
    spool_unchanged(spool, objs)


def test_contexts_offer_the_compressed_syntax_beside_the_uncompressed_fallback() -> None:
    sop = "1.2.840.10008.5.1.4.1.1.1.1"
    contexts = scu.build_contexts([(sop, ExplicitVRLittleEndian)], JPEGLSLossless)
    offered = [(cx.abstract_syntax, list(cx.transfer_syntax)) for cx in contexts]
    assert (sop, [JPEGLSLossless]) in offered
    assert any(s == sop and ExplicitVRLittleEndian in ts for s, ts in offered)
    assert scu.wanted_syntax(DestinationConfig()) is None


def test_an_image_the_encoder_refuses_goes_uncompressed(spool: Spool, tmp_path: Path) -> None:
    o = make_object(seed=460)
    put(spool, o, ("archive",))
    [row] = spool.due("archive", 2e9)
    ds = scu.compressed(Path(row.path).read_bytes(), row, JPEGLSLossless, "archive")
    assert isinstance(ds, Dataset) and ds.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert ds.SOPInstanceUID == o.sop_instance_uid
    broken = dcmread(row.path)
    broken.BitsStored, broken.HighBit = 8, 7  # pixels above 255: the encoders refuse the header's promise
    broken.save_as(tmp_path / "broken.dcm")
    fallback = scu.compressed((tmp_path / "broken.dcm").read_bytes(), row, JPEGLSLossless, "archive")
    assert fallback.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and fallback.BitsStored == 8
