"""The audit trail (DICOM PS3.15 A.5 over RFC 5424 syslog) against Debian's rsyslogd on loopback:
records made while the collector is down wait in the database and all arrive, in order, well-formed,
once it is up; UDP too. rsyslog's own file is the truth."""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.audit import AuditTrail, Outcome
from gateway.audit import messages as m
from tests.peers import Rsyslog, free_port
from tests.service.processes import until

pytestmark = pytest.mark.peers

HEADER = re.compile(r"^<85>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) dxgate (\d+) IHE\+RFC-3881 - \ufeff(<.*)$")
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def every_kind() -> list[m.AuditEvent]:
    return [
        m.application(True, ae_title="DXGATE", when=NOW),
        m.authentication(True, user="tina", outcome=Outcome.SUCCESS, address="127.0.0.1", when=NOW),
        m.authentication(True, user="mallory", outcome=Outcome.MINOR_FAILURE, address="10.1.2.3", when=NOW,
                         description="refused"),
        m.worklist_query(ae_title="DXGATE", ris="RIS", address="127.0.0.1", outcome=Outcome.SUCCESS, when=NOW),
        m.instances_transferred(ae_title="DXGATE", destination="PACS", address="127.0.0.1",
                                study_uid="1.2.826.0.1.3680043.10.999.1", patient_id="", outcome=Outcome.SUCCESS,
                                when=NOW),
        m.security_alert(m.SOFTWARE_CONFIGURATION, who="DXGATE", outcome=Outcome.SUCCESS, when=NOW,
                         description="reload applied: destinations"),
        m.authentication(False, user="tina", outcome=Outcome.SUCCESS, address="127.0.0.1", when=NOW),
        m.application(False, ae_title="DXGATE", when=NOW),
    ]


def check_well_formed(line: str) -> ET.Element:
    match = HEADER.match(line)
    assert match, f"not an RFC 5424 DICOM audit message: {line[:120]!r}"
    root = ET.fromstring(match.group(4))
    assert root.tag == "AuditMessage"
    ident = root.find("EventIdentification")
    assert ident is not None and ident.get("EventOutcomeIndicator") in ("0", "4", "8", "12")
    event_id = ident.find("EventID")
    assert event_id is not None and event_id.get("codeSystemName") == "DCM"
    assert root.find("AuditSourceIdentification[@AuditSourceID='DXGATE']") is not None
    return root


def code_of(root: ET.Element, tag: str) -> str | None:
    found = root.find(f"EventIdentification/{tag}")
    return None if found is None else found.get("csd-code")


@pytest.fixture
def trail_db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def test_records_wait_while_the_collector_is_down_then_all_arrive_in_order(tmp_path: Path, trail_db: Path) -> None:
    port = free_port()  # nobody listens yet
    trail = AuditTrail(trail_db, source_id="DXGATE", collector="127.0.0.1", port=port, transport="tcp")
    syslog: Rsyslog | None = None
    try:
        trail.start()
        events = every_kind()
        for e in events:
            trail.record(e)
        until(lambda: bool(trail.last_error))  # it tried, and failed: the records wait
        assert len(trail.unsent()) == len(events)
        syslog = Rsyslog(tmp_path / "rsyslog").start(tcp_port=port)
        until(lambda: len(syslog.messages()) >= len(events), timeout_s=90)  # the sender's backoff is bounded
        got = [check_well_formed(line) for line in syslog.messages()]
        codes = [(code_of(r, "EventID"), code_of(r, "EventTypeCode")) for r in got]
        assert codes == [(e.event[0], e.event_type[0] if e.event_type else None) for e in events]
        assert got[2].find("EventIdentification").get("EventOutcomeIndicator") == "4"  # type: ignore[union-attr]
        assert got[4].find("ParticipantObjectIdentification").get(  # type: ignore[union-attr]
            "ParticipantObjectID") == "1.2.826.0.1.3680043.10.999.1"
        assert trail.unsent() == []
        assert [r["event"] for r in trail.query()] == [e.name for e in reversed(events)]  # the local trail
    finally:
        trail.close()
        if syslog is not None:
            syslog.stop()


def _pem_files(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA of its own and a server certificate for 127.0.0.1 (trustme)."""
    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path / name
    d.mkdir()
    files = (d / "ca.pem", d / "cert.pem", d / "key.pem")
    ca.cert_pem.write_to_path(str(files[0]))
    cert.cert_chain_pems[0].write_to_path(str(files[1]))
    cert.private_key_pem.write_to_path(str(files[2]))
    return files


def test_tls_to_a_verified_collector_and_a_security_alert_for_an_unknown_one(tmp_path: Path, trail_db: Path) -> None:
    """RFC 5425: over TLS to rsyslog (gtls) whose certificate the configured CA signed, every
    record arrives well-formed. A collector with a certificate of another CA gets nothing: the
    records wait, and the failure is itself a Node Authentication security alert."""
    pki = _pem_files(tmp_path, "pki")
    syslog = Rsyslog(tmp_path / "rsyslog", tls=pki).start()
    trail = AuditTrail(trail_db, source_id="DXGATE", collector="127.0.0.1", port=syslog.tcp_port, transport="tls",
                       ca_file=str(pki[0]))
    try:
        trail.start()
        for e in every_kind():
            trail.record(e)
        until(lambda: len(syslog.messages()) >= len(every_kind()))
        for line in syslog.messages():
            check_well_formed(line)
        assert trail.unsent() == []
    finally:
        trail.close()
        syslog.stop()

    rogue = Rsyslog(tmp_path / "rogue", tls=_pem_files(tmp_path, "rogue-pki")).start()
    trail = AuditTrail(tmp_path / "second.db", source_id="DXGATE", collector="127.0.0.1", port=rogue.tcp_port,
                       transport="tls", ca_file=str(pki[0]))
    try:
        trail.start()
        trail.record(every_kind()[0])
        until(lambda: any(r["event"] == "Node Authentication" for r in trail.query()))
        assert "certificate verify failed" in trail.last_error
        assert len(trail.unsent()) == 2  # the record and the alert, both kept for a collector we trust
        assert rogue.messages() == []
        alert = trail.unsent()[1][2]
        assert "110126" in alert and "TLS to the audit collector failed" in alert
    finally:
        trail.close()
        rogue.stop()


def test_udp_transport(tmp_path: Path, trail_db: Path) -> None:
    syslog = Rsyslog(tmp_path / "rsyslog").start()
    trail = AuditTrail(trail_db, source_id="DXGATE", collector="127.0.0.1", port=syslog.udp_port, transport="udp")
    try:
        trail.start()
        for e in every_kind():
            trail.record(e)
        until(lambda: len(syslog.messages()) >= len(every_kind()))
        for line in syslog.messages():
            check_well_formed(line)
    finally:
        trail.close()
        syslog.stop()


def test_no_patient_name_in_any_audit_message() -> None:
    root = ET.fromstring(m.to_xml(m.instances_transferred(
        ae_title="DXGATE", destination="PACS", address="127.0.0.1", study_uid="1.2.3", patient_id="PID77",
        outcome=Outcome.SUCCESS, when=NOW), source_id="DXGATE"))
    objects = root.findall("ParticipantObjectIdentification")
    assert [o.get("ParticipantObjectTypeCode") for o in objects] == ["2", "1"]  # study, then the patient by ID
    assert all(o.find("ParticipantObjectName") is None for o in objects)


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = {t.name for t in threading.enumerate()}
    yield
    assert not {t.name for t in threading.enumerate() if t.name == "dxgate-audit"} - before
