"""DICOM TLS: to DCMTK's storescp built with OpenSSL (server and mutual authentication), and
on the storage commitment listener; a certificate another CA signed is refused, nothing is
sent, and the refusal is a security audit event."""

from __future__ import annotations

import io
import random
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydicom import dcmread
from pynetdicom.sop_class import Verification

from gateway.alarms import Alarms
from gateway.audit import messages as audit_msg
from gateway.config import DestinationConfig, from_dict
from gateway.errors import ConfigError, ForwardError
from gateway.forward import CommitmentListener, Forwarder, ListenerSettings, Outcome, settings_from, tls
from gateway.netopts import ApplicationEntity as AE
from gateway.spool import DeliveryState, Spool
from tests.forward.conftest import FakeClock
from tests.peers import Orthanc, StoreSCP, free_port
from tests.spool.objects import make_object, put

pytestmark = pytest.mark.peers


class Pki:
    """A CA with a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    def __init__(self, root: Path, name: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = root / f"{name}-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server_cert, self.server_key = self._issue(root, f"{name}-server", "127.0.0.1")
        self.client_cert, self.client_key = self._issue(root, f"{name}-client", "dxgate.test")

    def _issue(self, root: Path, name: str, identity: str) -> tuple[Path, Path]:
        leaf = self.ca.issue_cert(identity)
        cert, key = root / f"{name}.pem", root / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Pki]:
    root = tmp_path_factory.mktemp("pki")
    return Pki(root, "site"), Pki(root, "other")


@pytest.fixture
def tls_storescp(tmp_path: Path) -> Iterator[Callable[..., StoreSCP]]:
    started: list[StoreSCP] = []

    def make(pki: Pki, *, mutual: bool) -> StoreSCP:
        scp = StoreSCP(tmp_path / f"scp{len(started)}",
                       tls=(pki.server_key, pki.server_cert, pki.ca_file if mutual else None))
        scp.root.mkdir()
        started.append(scp.start())
        return scp

    yield make
    for scp in started:
        scp.stop()


def destination(scp: StoreSCP, **kw: Any) -> DestinationConfig:
    return DestinationConfig(name="pacs", host="127.0.0.1", port=scp.port, called_ae=scp.aet, timeout_s=10.0, **kw)


def send(spool: Spool, clock: FakeClock, dest: DestinationConfig, **kw: Any) -> tuple[Forwarder, list[Outcome]]:
    fwd = Forwarder(spool, [dest], calling_ae="DXGATE", clock=clock, rng=random.Random(3), **kw)
    return fwd, [r.outcome for r in fwd.forward_due()]


def test_storescp_over_tls_receives_identical_objects(spool: Spool, clock: FakeClock, pki: tuple[Pki, Pki],
                                                      tls_storescp: Callable[..., StoreSCP]) -> None:
    site, _ = pki
    scp = tls_storescp(site, mutual=False)
    objs = [make_object(seed=300 + i) for i in range(2)]
    for o in objs:
        put(spool, o)
    _, plain = send(spool, clock, destination(scp))  # the port speaks TLS only: plain DICOM gets nowhere
    assert plain == [Outcome.RETRY] * 2 and scp.files() == []
    clock.advance(10_000)
    _, outcomes = send(spool, clock, destination(scp, tls=True, tls_ca_file=str(site.ca_file)))
    assert outcomes == [Outcome.SENT] * 2
    got = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, scp.files())}
    for o in objs:
        assert got[o.sop_instance_uid] == dcmread(spool.instance(o.sop_instance_uid).path)


def test_mutual_tls_sends_with_the_client_certificate_and_is_refused_without(
        spool: Spool, clock: FakeClock, pki: tuple[Pki, Pki], tls_storescp: Callable[..., StoreSCP]) -> None:
    site, other = pki
    scp = tls_storescp(site, mutual=True)
    o = make_object(seed=310)
    put(spool, o)
    events: list[audit_msg.AuditEvent] = []
    for cert, key in ((None, None), (other.client_cert, other.client_key)):  # none, then one another CA signed
        extra = {"tls_cert_file": str(cert), "tls_key_file": str(key)} if cert else {}
        _, outcomes = send(spool, clock, destination(scp, tls=True, tls_ca_file=str(site.ca_file), **extra),
                           audit=events.append)
        assert outcomes == [Outcome.RETRY] and scp.files() == []
        clock.advance(10_000)
    assert len(events) == 2 and all(e.event_type == audit_msg.NODE_AUTHENTICATION for e in events)
    _, outcomes = send(spool, clock, destination(scp, tls=True, tls_ca_file=str(site.ca_file),
                                                 tls_cert_file=str(site.client_cert),
                                                 tls_key_file=str(site.client_key)))
    assert outcomes == [Outcome.SENT]
    assert [str(dcmread(p).SOPInstanceUID) for p in scp.files()] == [o.sop_instance_uid]


def test_server_certificate_from_another_ca_is_refused_audited_once_and_nothing_sent(
        spool: Spool, clock: FakeClock, pki: tuple[Pki, Pki], tls_storescp: Callable[..., StoreSCP]) -> None:
    site, other = pki
    scp = tls_storescp(other, mutual=False)  # the archive's certificate: signed by a CA dxgate does not trust
    o = make_object(seed=320)
    put(spool, o)
    events: list[audit_msg.AuditEvent] = []
    alarms = Alarms()
    fwd = Forwarder(spool, [destination(scp, tls=True, tls_ca_file=str(site.ca_file))], calling_ae="DXGATE",
                    clock=clock, rng=random.Random(3), alarms=alarms, audit=events.append)
    for _ in range(2):
        results = fwd.forward_due()
        assert [r.outcome for r in results] == [Outcome.RETRY]
        clock.advance(10_000)
    error = results[0].error or ""
    assert "TLS handshake failed" in error and "certificate verify failed" in error
    assert scp.files() == []
    delivery = spool.deliveries(o.sop_instance_uid)[0]
    assert delivery.state is DeliveryState.PENDING and "certificate verify failed" in (delivery.last_error or "")
    assert len(events) == 1  # once per failure streak, not per retry
    ev = events[0]
    assert ev.event_type == audit_msg.NODE_AUTHENTICATION and ev.outcome == audit_msg.Outcome.SERIOUS_FAILURE
    xml = audit_msg.to_xml(ev, source_id="DXGATE")
    assert "certificate verify failed" in xml and 'NetworkAccessPointID="127.0.0.1"' in xml
    assert any(a.code == "forward-tls-failed" for a in alarms.active())


# --- the commitment listener ---------------------------------------------------------------------


def listener(pki: Pki, audit: Callable[[audit_msg.AuditEvent], object], *, require: bool) -> CommitmentListener:
    settings = ListenerSettings(ae_title="DXGATE", host="127.0.0.1", port=0, allowed_aes=frozenset({"ARCHIVE"}),
                                allowed_hosts=("127.0.0.1",), timeout_s=10.0, tls_cert_file=str(pki.server_cert),
                                tls_key_file=str(pki.server_key), tls_ca_file=str(pki.ca_file),
                                tls_require_client_cert=require)
    return CommitmentListener(settings, lambda _e: (0x0000, None), audit=audit,
                              clock=lambda: datetime(2026, 12, 1, tzinfo=UTC)).start()


def echo(port: int, pki: Pki, client: Pki | None) -> bool:
    """Whether an archive calling with TLS (trusting `pki`'s CA, presenting `client`'s
    certificate) is admitted and answered."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if client is not None:
        ctx.load_cert_chain(str(client.client_cert), str(client.client_key))
    ae = AE(ae_title="ARCHIVE")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="DXGATE", tls_args=(ctx, "127.0.0.1"))
    if not assoc.is_established:
        return False
    try:
        return int(assoc.send_c_echo().Status) == 0x0000
    finally:
        assoc.release()


def plain_echo(port: int) -> bool:
    ae = AE(ae_title="ARCHIVE")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="DXGATE")
    established = bool(assoc.is_established)
    if established:
        assoc.release()
    return established


class Recorded:
    """Audit events as the listener's accept thread records them, waited for with a condition
    (the client may see the refusal before the listener has recorded it)."""

    def __init__(self) -> None:
        self.events: list[audit_msg.AuditEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: audit_msg.AuditEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, n: int, timeout_s: float = 10.0) -> list[audit_msg.AuditEvent]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.events) >= n, timeout_s)
            return list(self.events)


def test_listener_requires_a_client_certificate_from_its_ca(pki: tuple[Pki, Pki]) -> None:
    site, other = pki
    recorded = Recorded()
    lst = listener(site, recorded, require=True)
    try:
        assert echo(lst.port, site, site)
        assert not echo(lst.port, site, None)
        assert not echo(lst.port, site, other)
        assert not plain_echo(lst.port)
        events = recorded.wait(3)
        assert len(events) == 3 and lst.refused == 3
        assert all(e.event_type == audit_msg.NODE_AUTHENTICATION for e in events)
        assert lst.reports == 0
    finally:
        lst.stop()


def test_listener_without_required_client_certificates_still_speaks_only_tls(pki: tuple[Pki, Pki]) -> None:
    site, other = pki
    recorded = Recorded()
    lst = listener(site, recorded, require=False)
    try:
        assert echo(lst.port, site, None)
        assert not echo(lst.port, site, other)  # a certificate presented is still verified
        assert not plain_echo(lst.port)
        assert len(recorded.wait(2)) == 2 and lst.refused == 2
    finally:
        lst.stop()


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, message", [
    ({"destinations": [{"tls": True}]}, "needs tls_ca_file"),
    ({"destinations": [{"tls": True, "tls_ca_file": "ca.pem", "tls_cert_file": "c.pem"}]}, "go together"),
    ({"destinations": [{"tls_cert_file": "c.pem", "tls_key_file": "k.pem"}]}, "tls = false"),
    ({"commitment_listener": {"tls": True}}, "needs tls_cert_file"),
    ({"commitment_listener": {"tls_require_client_cert": True}}, "needs tls = true"),
])
def test_incomplete_tls_settings_are_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(raw)


def test_listener_settings_carry_tls(pki: tuple[Pki, Pki]) -> None:
    site, _ = pki
    cfg = from_dict({"destinations": [{"commitment": True}], "commitment_listener": {
        "tls": True, "tls_cert_file": str(site.server_cert), "tls_key_file": str(site.server_key),
        "tls_ca_file": str(site.ca_file), "tls_require_client_cert": True}})
    s = settings_from(cfg)
    assert s is not None and s.tls_cert_file == str(site.server_cert) and s.tls_require_client_cert


def test_credential_paths_resolve_under_credentials_directory(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert tls.resolve("credential:pacs-ca") == str(tmp_path / "pacs-ca")
    assert tls.resolve("/etc/dxgate/ca.pem") == "/etc/dxgate/ca.pem"
    with pytest.raises(ForwardError, match="not a credential name"):
        tls.resolve("credential:../x")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ForwardError, match="CREDENTIALS_DIRECTORY"):
        tls.resolve("credential:pacs-ca")


def test_client_context_is_tls12_or_later_and_verifies(pki: tuple[Pki, Pki]) -> None:
    site, _ = pki
    ctx = tls.client_context(ca_file=str(site.ca_file))
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with pytest.raises(ForwardError, match="cannot load"):
        tls.client_context(ca_file="/nonexistent/ca.pem")


# --- Orthanc with DICOM TLS ----------------------------------------------------------------------


@pytest.fixture
def tls_orthanc(tmp_path: Path, pki: tuple[Pki, Pki]) -> Iterator[Orthanc]:
    site, _ = pki
    peer = Orthanc(tmp_path / "orthanc", extra_config={
        "DicomTlsEnabled": True, "DicomTlsCertificate": str(site.server_cert),
        "DicomTlsPrivateKey": str(site.server_key), "DicomTlsTrustedCertificates": str(site.ca_file),
        "DicomTlsRemoteCertificateRequired": True})
    peer.root.mkdir()
    peer.start()
    yield peer
    peer.stop()


def test_orthanc_with_mutual_tls_stores_and_refuses_an_untrusted_client(
        spool: Spool, clock: FakeClock, pki: tuple[Pki, Pki], tls_orthanc: Orthanc) -> None:
    site, other = pki
    o = make_object(seed=330)
    put(spool, o)

    def dest(client: Pki) -> DestinationConfig:
        return DestinationConfig(name="pacs", host="127.0.0.1", port=tls_orthanc.dicom_port, called_ae=tls_orthanc.aet,
                                 timeout_s=10.0, tls=True, tls_ca_file=str(site.ca_file),
                                 tls_cert_file=str(client.client_cert), tls_key_file=str(client.client_key))

    events: list[audit_msg.AuditEvent] = []
    _, outcomes = send(spool, clock, dest(other), audit=events.append)  # a client certificate it does not trust
    assert outcomes == [Outcome.RETRY] and tls_orthanc.instances() == [] and len(events) == 1
    clock.advance(10_000)
    _, outcomes = send(spool, clock, dest(site))
    assert outcomes == [Outcome.SENT]
    oid = tls_orthanc.find_instance(o.sop_instance_uid)
    assert oid is not None and dcmread(io.BytesIO(tls_orthanc.instance_file(oid))).PixelData == o.pixels.tobytes()


def test_storage_commitment_with_orthanc_over_tls_both_ways(tmp_path: Path, spool: Spool, clock: FakeClock,
                                                            pki: tuple[Pki, Pki]) -> None:
    """dxgate sends and asks over mutual TLS; Orthanc reports on a new association to the
    listener, over TLS with its own certificate, which the listener requires."""
    site, _ = pki
    port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"dxgate": {"AET": "DXGATE", "Host": "127.0.0.1", "Port": port,
                                                                   "UseDicomTls": True}},
                      extra_config={"DicomTlsEnabled": True, "DicomTlsCertificate": str(site.server_cert),
                                    "DicomTlsPrivateKey": str(site.server_key),
                                    "DicomTlsTrustedCertificates": str(site.ca_file),
                                    "DicomTlsRemoteCertificateRequired": True})
    (tmp_path / "orthanc").mkdir()
    orthanc.start()
    try:
        config = from_dict({
            "site": {"ae_title": "DXGATE"},
            "commitment_listener": {"port": port, "tls": True, "tls_cert_file": str(site.server_cert),
                                    "tls_key_file": str(site.server_key), "tls_ca_file": str(site.ca_file),
                                    "tls_require_client_cert": True},
            "destinations": [{"name": "orthanc", "host": "127.0.0.1", "port": orthanc.dicom_port,
                              "called_ae": orthanc.aet, "timeout_s": 20, "commitment": True, "commitment_hold_s": 0,
                              "tls": True, "tls_ca_file": str(site.ca_file), "tls_cert_file": str(site.client_cert),
                              "tls_key_file": str(site.client_key)}]})
        settings = settings_from(config)
        assert settings is not None
        objs = [make_object(seed=340 + i) for i in range(2)]
        for o in objs:
            put(spool, o, ("orthanc",))
        fwd = Forwarder(spool, config.destinations, calling_ae="DXGATE", clock=clock)
        committed = threading.Event()
        fwd.committer.on_event = lambda e: committed.set() if e.outcome == "committed" else None
        recorded = Recorded()
        lst = CommitmentListener(settings, fwd.committer.handle_report, audit=recorded).start()
        try:
            assert [r.outcome for r in fwd.forward_due()] == [Outcome.SENT] * 2
            assert committed.wait(30)
            assert lst.reports >= 1 and lst.refused == 0 and recorded.events == []
        finally:
            lst.stop()
        for o in objs:
            assert [d.state for d in spool.deliveries(o.sop_instance_uid)] == [DeliveryState.COMMITTED]
            assert orthanc.find_instance(o.sop_instance_uid) is not None
    finally:
        orthanc.stop()
