"""Forwarding to the real archives: DCMTK storescp and Orthanc."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from pydicom import dcmread
from pynetdicom import evt

from gateway.config import DestinationConfig
from gateway.forward import Forwarder, Outcome
from gateway.netopts import socket_nodelay
from gateway.spool import Spool
from tests.forward.conftest import FakeClock
from tests.peers import Orthanc, StoreSCP
from tests.spool.objects import SECONDARY_CAPTURE, make_object, put

pytestmark = pytest.mark.peers


def test_storescp_receives_identical_objects_over_one_nodelay_association(
        spool: Spool, clock: FakeClock, storescp: StoreSCP) -> None:
    objs = [make_object(96, 80, seed=i) for i in range(3)] + [make_object(sop_class_uid=SECONDARY_CAPTURE, seed=9)]
    for o in objs:
        put(spool, o, ("dcmtk",))
    nodelay: list[bool] = []
    fwd = Forwarder(spool, [DestinationConfig(name="dcmtk", host="127.0.0.1", port=storescp.port,
                                              called_ae=storescp.aet, timeout_s=20.0)],
                    calling_ae="DXGATE", clock=clock, rng=random.Random(1),
                    extra_handlers=[(evt.EVT_ESTABLISHED, lambda e: nodelay.append(socket_nodelay(e.assoc)))])
    results = fwd.forward_due()
    assert [r.outcome for r in results] == [Outcome.SENT] * len(objs)
    assert nodelay == [True]  # one association, TCP_NODELAY on dxgate's socket
    received = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, storescp.files())}
    assert set(received) == {o.sop_instance_uid for o in objs}
    for o in objs:
        sent = dcmread(spool.instance(o.sop_instance_uid).path)
        got = received[o.sop_instance_uid]
        assert got.PixelData == sent.PixelData
        assert np.array_equal(got.pixel_array, o.pixels)
        assert got == sent  # every data element, not only the pixels


def test_orthanc_stores_the_instances(spool: Spool, clock: FakeClock, orthanc: Orthanc) -> None:
    objs = [make_object(seed=20 + i) for i in range(2)]
    for o in objs:
        put(spool, o, ("orthanc",))
    fwd = Forwarder(spool, [DestinationConfig(name="orthanc", host="127.0.0.1", port=orthanc.dicom_port,
                                              called_ae=orthanc.aet, timeout_s=20.0)],
                    calling_ae="DXGATE", clock=clock)
    assert [r.outcome for r in fwd.forward_due()] == [Outcome.SENT] * 2
    assert len(orthanc.rest("/instances")) == 2
    for o in objs:
        oid = orthanc.find_instance(o.sop_instance_uid)
        assert oid is not None
        tags = orthanc.rest(f"/instances/{oid}")["MainDicomTags"]
        assert tags["SOPInstanceUID"] == o.sop_instance_uid
        study = orthanc.rest(f"/instances/{oid}/study")["MainDicomTags"]
        assert study["StudyInstanceUID"] == o.study_instance_uid
        assert dcmread(io.BytesIO(orthanc.instance_file(oid))).PixelData == o.pixels.tobytes()
