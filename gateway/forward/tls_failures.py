"""Failed TLS handshakes with an archive: an alarm per destination, one audit event per streak."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.alarms import Alarms
from gateway.audit import messages as audit_msg
from gateway.config import DestinationConfig

LOGGER = logging.getLogger(__name__)


class TlsFailures:
    """Which destinations' last TLS handshake failed; `audit` is read at each failure."""

    def __init__(self, alarms: Alarms, *, calling_ae: str,
                 audit: Callable[[], Callable[[audit_msg.AuditEvent], object] | None]) -> None:
        self._alarms = alarms
        self._calling_ae = calling_ae
        self._audit = audit
        self._failing: set[str] = set()  # destinations whose last TLS handshake failed (audited once)

    def failed(self, dest: DestinationConfig, why: str) -> None:
        """A TLS handshake with the archive failed (its certificate not trusted, ours refused):
        an alarm, and a security audit event once per failure streak, not per retry."""
        self._alarms.raise_("forward-tls-failed", f"TLS with {dest.name} ({dest.host}:{dest.port}) failed: {why}; "
                            "nothing is sent until it works (check the certificates)", key=dest.name)
        if dest.name in self._failing:
            return
        self._failing.add(dest.name)
        audit = self._audit()
        if audit is None:
            return
        try:
            audit(audit_msg.tls_failed(local_ae=self._calling_ae, peer=f"{dest.called_ae}@{dest.host}:{dest.port}",
                                       address=dest.host, reason=why, when=datetime.now(UTC)))
        except Exception:  # an audit failure is logged; forwarding goes on
            LOGGER.exception("audit record of a TLS failure could not be written")

    def works(self, dest: DestinationConfig) -> None:
        if dest.name in self._failing:
            self._failing.discard(dest.name)
            self._alarms.clear("forward-tls-failed", dest.name)
