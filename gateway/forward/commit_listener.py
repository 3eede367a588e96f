"""dxgate's listener (SCP role) for Storage Commitment reports on a new association.

An archive that answers a commitment request later opens an association to this listener and
sends the N-EVENT-REPORT (Orthanc always does). Only configured calling AE titles from
configured hosts, calling dxgate's own AE title, are admitted: every other association is
rejected (A-ASSOCIATE-RJ, permanent) and recorded as a security audit event (PS3.15 A.5.3.11
Security Alert, Node Authentication). Verification (C-ECHO) is answered for admitted peers.
TCP_NODELAY is set on every accepted socket.

With TLS configured, the listener presents its certificate (TLS 1.2+) and verifies the client
certificates archives present, refusing those without one when asked to; a failed handshake
is dropped before any DICOM is read, counted as refused, and audited the same way.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt

from gateway.audit import messages as audit_msg
from gateway.config import Config
from gateway.forward import tls
from gateway.forward.commitment import PUSH_MODEL
from gateway.netopts import ApplicationEntity, nodelay_handlers

LOGGER = logging.getLogger(__name__)

REJECTED_PERMANENT, SERVICE_USER = 1, 1
NO_REASON, CALLING_AE_NOT_RECOGNISED, CALLED_AE_NOT_RECOGNISED = 1, 3, 7
VERIFICATION = "1.2.840.10008.1.1"


@dataclass(frozen=True)
class ListenerSettings:
    ae_title: str
    host: str
    port: int  # 0: any free port (tests)
    allowed_aes: frozenset[str]
    allowed_hosts: tuple[str, ...]
    timeout_s: float = 30.0
    tls_cert_file: str = ""  # set: TLS on the listener
    tls_key_file: str = ""
    tls_ca_file: str = ""
    tls_require_client_cert: bool = False


def resolve(hosts: Iterable[str]) -> frozenset[str]:
    """The addresses of the allowed hosts (names resolved once, at start or reload)."""
    out: set[str] = set()
    for host in hosts:
        try:
            out.update(str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
        except OSError as exc:
            LOGGER.warning("allowed host %r does not resolve (%s); it cannot be admitted", host, exc)
    return frozenset(out)


class CommitmentListener:
    """A pynetdicom server admitting the allowed archives and handing reports to `on_report`."""

    def __init__(self, settings: ListenerSettings, on_report: Callable[[evt.Event], tuple[int, Dataset | None]],
                 *, audit: Callable[[audit_msg.AuditEvent], object] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._on_report = on_report
        self._audit = audit
        self._clock = clock
        self._lock = threading.Lock()
        self._server: Any = None
        self.refused = 0  # associations refused (a metric)
        self.reports = 0  # reports received on this listener
        self.configure(settings)

    def configure(self, settings: ListenerSettings) -> None:
        """New allow-lists (a reload); the address and port take effect at the next start."""
        addresses = resolve(settings.allowed_hosts)
        with self._lock:
            self.settings = settings
            self._addresses = addresses

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server is not None else self.settings.port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> CommitmentListener:
        s = self.settings
        ae = ApplicationEntity(ae_title=s.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = s.timeout_s
        ae.require_called_aet = False  # checked (and audited) in _requested
        ae.add_supported_context(PUSH_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                                 scu_role=True, scp_role=True)
        ae.add_supported_context(VERIFICATION, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        handlers = nodelay_handlers() + [(evt.EVT_REQUESTED, self._requested),
                                         (evt.EVT_N_EVENT_REPORT, self._report)]
        ssl_context = None
        if s.tls_cert_file:
            ssl_context = tls.server_context(cert_file=s.tls_cert_file, key_file=s.tls_key_file, ca_file=s.tls_ca_file,
                                             require_client_cert=s.tls_require_client_cert,
                                             on_failure=self._tls_failed, handshake_timeout_s=min(10.0, s.timeout_s))
        self._server = ae.start_server((s.host, s.port), block=False, evt_handlers=handlers, ssl_context=ssl_context)
        LOGGER.info("storage commitment listener %s on %s:%d%s", s.ae_title, s.host, self.port,
                    " (TLS)" if ssl_context is not None else "")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            LOGGER.info("storage commitment listener stopped")

    def _requested(self, event: evt.Event) -> None:
        """Admit or refuse an association request (before it is accepted)."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
        called = str(getattr(primitive, "called_ae_title", "") or "").strip()
        address = str(assoc.requestor.address)
        with self._lock:
            s, addresses = self.settings, self._addresses
        if called != s.ae_title:
            why, diagnostic = f"called AE title {called!r} is not {s.ae_title!r}", CALLED_AE_NOT_RECOGNISED
        elif calling not in s.allowed_aes:
            why, diagnostic = f"calling AE title {calling!r} is not allowed", CALLING_AE_NOT_RECOGNISED
        elif address not in addresses:
            why, diagnostic = f"host {address} is not allowed", NO_REASON
        else:
            return
        assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, diagnostic)
        assoc.kill()  # as pynetdicom does after its own rejections: waits until the A-ASSOCIATE-RJ is out
        with self._lock:
            self.refused += 1
        LOGGER.warning("storage commitment listener refused an association from %s at %s: %s", calling, address, why)
        if self._audit is not None:
            try:
                self._audit(audit_msg.association_refused(calling_ae=calling, address=address, called_ae=called,
                                                          reason=why, when=self._clock()))
            except Exception:  # an audit failure is logged; the refusal stands
                LOGGER.exception("audit record of a refused association could not be written")

    def _tls_failed(self, address: str, why: str) -> None:
        """A TLS handshake on the listener failed (no or an untrusted client certificate)."""
        with self._lock:
            self.refused += 1
            ae_title = self.settings.ae_title
        LOGGER.warning("storage commitment listener refused a TLS connection from %s: %s", address, why)
        if self._audit is not None:
            try:
                self._audit(audit_msg.tls_failed(local_ae=ae_title, peer=address, address=address, reason=why,
                                                 when=self._clock(), outbound=False))
            except Exception:  # an audit failure is logged; the refusal stands
                LOGGER.exception("audit record of a refused TLS connection could not be written")

    def _report(self, event: evt.Event) -> tuple[int, Dataset | None]:
        with self._lock:
            self.reports += 1
        return self._on_report(event)


def settings_from(config: Config) -> ListenerSettings | None:
    """The listener a configuration asks for; None when no destination has commitment. Empty
    allow-lists admit the called AE titles and hosts of the destinations with commitment."""
    committing = [d for d in config.destinations if d.commitment]
    if not committing:
        return None
    cl = config.commitment_listener
    return ListenerSettings(
        ae_title=cl.ae_title or config.site.ae_title, host=cl.host, port=cl.port,
        allowed_aes=frozenset(cl.allowed_calling_aes or (d.called_ae for d in committing)),
        allowed_hosts=tuple(cl.allowed_hosts or dict.fromkeys(d.host for d in committing)), timeout_s=cl.timeout_s,
        tls_cert_file=cl.tls_cert_file if cl.tls else "", tls_key_file=cl.tls_key_file if cl.tls else "",
        tls_ca_file=cl.tls_ca_file if cl.tls else "", tls_require_client_cert=cl.tls_require_client_cert)
