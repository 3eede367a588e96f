"""Storage commitment against Orthanc (Debian): its SCP answers on a NEW association to dxgate's
listener, as configured in its DicomModalities; the outcome is compared with Orthanc's own view."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from gateway.config import Config, from_dict
from gateway.forward import CommitmentEvent, CommitmentListener, Forwarder, Outcome, settings_from
from gateway.spool import DeliveryState, Spool
from tests.forward.conftest import FakeClock
from tests.peers import Orthanc, free_port
from tests.spool.objects import make_object, put

pytestmark = pytest.mark.peers


@dataclass
class Rig:
    orthanc: Orthanc
    config: Config
    listener_port: int


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"dxgate": ["DXGATE", "127.0.0.1", port]}).start()
    config = from_dict({
        "site": {"ae_title": "DXGATE"},
        "commitment_listener": {"port": port},  # host 127.0.0.1, allow-list from the destination
        "destinations": [{"name": "orthanc", "host": "127.0.0.1", "port": orthanc.dicom_port,
                          "called_ae": orthanc.aet, "timeout_s": 20, "commitment": True, "commitment_hold_s": 0}],
    })
    try:
        yield Rig(orthanc, config, port)
    finally:
        orthanc.stop()


class Events:
    def __init__(self) -> None:
        self.seen: list[CommitmentEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: CommitmentEvent) -> None:
        with self._cond:
            self.seen.append(event)
            self._cond.notify_all()

    def wait(self, outcome: str, count: int = 1, timeout: float = 30.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: sum(e.count for e in self.seen if e.outcome == outcome) >= count,
                                       timeout)


def test_orthanc_commits_on_a_new_association_and_the_files_go(rig: Rig, spool: Spool, clock: FakeClock) -> None:
    settings = settings_from(rig.config)
    assert settings is not None and settings.allowed_aes == {"ORTHANC"} and settings.host == "127.0.0.1"
    objs = [make_object(seed=70 + i) for i in range(3)]
    paths = [Path(put(spool, o, ("orthanc",)).path) for o in objs]
    fwd = Forwarder(spool, rig.config.destinations, calling_ae="DXGATE", clock=clock)
    events = Events()
    fwd.committer.on_event = events
    listener = CommitmentListener(settings, fwd.committer.handle_report).start()
    try:
        assert [r.outcome for r in fwd.forward_due()] == [Outcome.SENT] * 3
        assert events.wait("committed", 3)
        assert listener.reports >= 1 and listener.refused == 0
    finally:
        listener.stop()
    for o in objs:
        assert [d.state for d in spool.deliveries(o.sop_instance_uid)] == [DeliveryState.COMMITTED]
    fwd.retain()
    assert not any(p.exists() for p in paths)
    # Orthanc's own view: it holds every committed instance, with the pixels dxgate spooled
    for o in objs:
        oid = rig.orthanc.find_instance(o.sop_instance_uid)
        assert oid is not None
        assert rig.orthanc.rest(f"/instances/{oid}")["MainDicomTags"]["SOPInstanceUID"] == o.sop_instance_uid
        assert dcmread(io.BytesIO(rig.orthanc.instance_file(oid))).PixelData == o.pixels.tobytes()


def test_an_instance_orthanc_lost_is_reported_failed_and_sent_again_once(
        rig: Rig, spool: Spool, clock: FakeClock) -> None:
    o = make_object(seed=80)
    path = Path(put(spool, o, ("orthanc",)).path)
    plain = [d.model_copy(update={"commitment": False}) for d in rig.config.destinations]
    assert [r.outcome for r in Forwarder(spool, plain, calling_ae="DXGATE", clock=clock).forward_due()] == [
        Outcome.SENT]
    oid = rig.orthanc.find_instance(o.sop_instance_uid)
    assert oid is not None
    rig.orthanc.rest(f"/instances/{oid}", method="DELETE")  # the archive loses it after storing it
    assert rig.orthanc.find_instance(o.sop_instance_uid) is None

    settings = settings_from(rig.config)
    assert settings is not None
    fwd = Forwarder(spool, rig.config.destinations, calling_ae="DXGATE", clock=clock)
    events = Events()
    fwd.committer.on_event = events
    listener = CommitmentListener(settings, fwd.committer.handle_report).start()
    try:
        fwd.forward_due()  # asks about the sent instance no transaction covered yet
        assert events.wait("resent")
        row = spool.deliveries(o.sop_instance_uid)[0]
        assert row.state is DeliveryState.PENDING and row.commit_failures == 1
        assert "Failure Reason 0x0112 (No such object instance)" in (row.last_error or "")
        assert path.exists()
        assert [r.outcome for r in fwd.forward_due()] == [Outcome.SENT]  # sent again, asked again
        assert events.wait("committed")
    finally:
        listener.stop()
    assert [d.state for d in spool.deliveries(o.sop_instance_uid)] == [DeliveryState.COMMITTED]
    assert rig.orthanc.find_instance(o.sop_instance_uid) is not None  # Orthanc has it again
    fwd.retain()
    assert not path.exists()
