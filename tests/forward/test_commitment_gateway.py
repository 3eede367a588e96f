"""The composition root runs the commitment listener with the forwarder: reports on a new
association commit and free the spool, a refused association lands in the audit trail, and
the listener stops with the gateway."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from gateway.app import Gateway
from gateway.audit import AuditTrail
from gateway.config import (
    CommitmentListenerConfig,
    Config,
    DestinationConfig,
    DetectorConfig,
    GeneratorConfig,
    ReviewConfig,
)
from gateway.forward import CommitmentEvent
from hw_sim.room import SimRoom
from tests.forward.commit_scp import CommitSCP
from tests.peers import free_port
from tests.spool.objects import make_object, put


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=4) as sim:
        yield sim


def until(condition: object, timeout_s: float = 20.0) -> bool:
    """A bounded wait for a state another thread reaches (retention after the report)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        threading.Event().wait(0.02)
    return False


def test_gateway_listener_commits_frees_and_audits(tmp_path: Path, room: SimRoom) -> None:
    port = free_port()
    scp = CommitSCP(report="new", listener=("127.0.0.1", port, "DXGATE")).start()
    try:
        cfg = Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode="8x8"),
                     generator=GeneratorConfig(port=room.start_generator()),
                     commitment_listener=CommitmentListenerConfig(port=port),
                     review=ReviewConfig(hold_s=0),  # the image put below goes at once, no verdict awaited
                     destinations=(DestinationConfig(name="pacs", port=scp.port, called_ae=scp.aet, timeout_s=10,
                                                     commitment=True, commitment_hold_s=0),))
        with Gateway(cfg, usb_backend=room.usb_backend()) as gw:
            committed = threading.Event()

            def seen(e: CommitmentEvent) -> None:
                if e.outcome == "committed":
                    committed.set()

            gw.forwarder.committer.on_event = seen
            assert gw.commit_listener is not None and not gw.commit_listener.running
            o = make_object(seed=90)
            path = Path(put(gw.spool, o).path)
            gw.start_forwarding()
            assert gw.commit_listener.running and gw.commit_listener.port == port
            gw.wake_forwarder()
            assert committed.wait(20)
            assert until(lambda: not path.exists())  # the worker's pass after the report frees it
            assert [d.state.value for d in gw.spool.deliveries(o.sop_instance_uid)] == ["committed"]

            intruder = AE(ae_title="INTRUDER")
            intruder.add_requested_context(Verification)
            assert intruder.associate("127.0.0.1", port, ae_title="DXGATE").is_rejected
        with socket.socket() as s:  # stopped with the gateway
            assert s.connect_ex(("127.0.0.1", port)) != 0
        trail = AuditTrail(cfg.path(cfg.spool.database), source_id="DXGATE")
        try:
            assert [(r["event"], r["outcome"]) for r in trail.query()] == [("Node Authentication", 4)]
        finally:
            trail.close()
    finally:
        scp.stop()


def test_a_reload_starts_and_stops_the_listener_with_commitment(tmp_path: Path, room: SimRoom) -> None:
    port = free_port()
    plain = DestinationConfig(name="pacs", port=free_port(), called_ae="PACS", timeout_s=5)
    cfg = Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode="8x8"),
                 generator=GeneratorConfig(port=room.start_generator()),
                 commitment_listener=CommitmentListenerConfig(port=port), destinations=(plain,))
    with Gateway(cfg, usb_backend=room.usb_backend()) as gw:
        gw.start_forwarding()
        assert gw.commit_listener is None
        committing = plain.model_copy(update={"commitment": True})
        gw.reconfigure(cfg.model_copy(update={"destinations": (committing,)}))
        assert gw.commit_listener is not None and gw.commit_listener.running
        assert gw.commit_listener.settings.allowed_aes == {"PACS"}
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        gw.reconfigure(cfg)
        assert gw.commit_listener is None
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
