"""The embedded PACS: stores what it receives, exactly, under the SOP Instance UID."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation  # type: ignore[attr-defined]

from gateway.config import SiteConfig
from gateway.dicom import build_dx, new_uid, to_bytes
from gateway.netopts import nodelay_handlers, socket_nodelay
from gateway.peers import StorageServer
from tests.dicom_inputs import DETECTOR, EI, EXPOSURE, MODE, NOW, make_frame, make_item
from tests.peers import require


def dx() -> Dataset:
    item = make_item()
    return build_dx(make_frame(), EXPOSURE, item, EI, site=SiteConfig(), detector=DETECTOR,
                  pixel_spacing_mm=MODE.pixel_spacing_mm, study_uid=item.study_instance_uid,
                  series_uid=new_uid("2.25"), sop_instance_uid=new_uid("2.25"), series_number=1,
                  instance_number=1, body_part="CHEST", view_position="PA", now=NOW)


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[StorageServer]:
    server = StorageServer(tmp_path / "pacs", ae_title="PACS")
    server.port = server.start()  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


def send(server: StorageServer, datasets: list[Dataset], syntax: str = ExplicitVRLittleEndian,
         called_ae: str = "PACS") -> tuple[list[int], bool]:
    ae = AE(ae_title="DXGATE")
    ae.add_requested_context(DigitalXRayImageStorageForPresentation, [syntax])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", server.port, ae_title=called_ae,  # type: ignore[attr-defined]
                         evt_handlers=nodelay_handlers())
    if not assoc.is_established:
        return [], False
    nodelay = socket_nodelay(assoc)
    try:
        statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()
    return statuses, nodelay


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_stores_each_instance_under_its_uid(pacs: StorageServer, syntax: str) -> None:
    sent = [dx(), dx()]
    if syntax == ImplicitVRLittleEndian:
        for ds in sent:
            ds.file_meta.TransferSyntaxUID = syntax
    statuses, nodelay = send(pacs, sent, syntax)
    assert statuses == [0, 0] and nodelay
    assert pacs.wait_for(2, timeout_s=5)
    assert [p.name for p in pacs.received] == [f"{ds.SOPInstanceUID}.dcm" for ds in sent]
    for ds, path in zip(sent, pacs.received, strict=True):
        back = pydicom.dcmread(path)
        assert back.file_meta.TransferSyntaxUID == syntax
        assert back.SOPInstanceUID == ds.SOPInstanceUID and str(back.PatientName) == "Müller^Jürgen"
        np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)
    assert not [p for p in pacs.directory.iterdir() if p.suffix != ".dcm"]  # no temporary files left


def test_wrong_called_ae_is_rejected(pacs: StorageServer) -> None:
    assert send(pacs, [dx()], called_ae="NOT_PACS") == ([], False)
    assert pacs.received == []


def test_wait_for_times_out(pacs: StorageServer) -> None:
    assert not pacs.wait_for(1, timeout_s=0.05)


@pytest.mark.peers
def test_dcmtk_storescu_can_send_to_it(pacs: StorageServer, tmp_path: Path) -> None:
    ds = dx()
    path = tmp_path / "img.dcm"
    path.write_bytes(to_bytes(ds))
    storescu = require("/usr/bin/storescu")
    out = subprocess.run([storescu, "-aet", "DXGATE", "-aec", "PACS", "127.0.0.1",
                          str(pacs.port), str(path)],  # type: ignore[attr-defined]
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert pacs.wait_for(1, timeout_s=10)
    assert pydicom.dcmread(pacs.received[0]).PixelData == ds.PixelData
