"""The audit trail: every event kept in SQLite first, then sent to the site's collector.

Recording never waits for the network: `record()` is one INSERT (the event is durable before
the action it audits is reported done); a sender thread delivers unsent records in order as
RFC 5424 syslog messages (IHE ATNA: MSGID IHE+RFC-3881, facility authpriv) over TLS (RFC 5425),
TCP (RFC 6587 octet counting) or UDP (RFC 5426), and marks them sent. While the collector is
down the records wait in the database, across restarts.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.audit.messages import NODE_AUTHENTICATION, AuditEvent, Outcome, security_alert, to_xml
from gateway.durable import open_state_db

LOGGER = logging.getLogger(__name__)

PRI = 10 * 8 + 5  # facility authpriv (10), severity notice (5)
MSGID = "IHE+RFC-3881"
BOM = "\ufeff"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    event TEXT NOT NULL,
    outcome INTEGER NOT NULL,
    user TEXT NOT NULL,
    xml TEXT NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS audit_unsent ON audit (id) WHERE sent_at IS NULL;
"""


def syslog_message(xml: str, *, when: datetime, hostname: str, procid: int) -> bytes:
    """One RFC 5424 message carrying a DICOM audit message."""
    stamp = when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"<{PRI}>1 {stamp} {hostname or '-'} dxgate {procid} {MSGID} - {BOM}{xml}".encode()


class AuditTrail:
    """Audit records in the state database, sent to a collector when one is configured."""

    def __init__(self, database: Path | str, *, source_id: str, site: str = "", collector: str = "",
                 port: int = 6514, transport: str = "tls", ca_file: str = "", cert_file: str = "",
                 key_file: str = "", busy_timeout_s: float = 5.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.source_id, self.site = source_id, site
        self.collector, self.port, self.transport = collector, port, transport
        self._tls_files = (ca_file, cert_file, key_file)
        self._clock = clock
        self._db = open_state_db(database, busy_timeout_s)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hostname = socket.gethostname()
        self.last_error = ""

    # --- recording and reading ---------------------------------------------------------------

    def record(self, event: AuditEvent, user: str = "") -> int:
        xml = to_xml(event, source_id=self.source_id, site=self.site)
        with self._lock:
            cur = self._db.execute("INSERT INTO audit (ts, event, outcome, user, xml) VALUES (?, ?, ?, ?, ?)",
                                   (event.when.timestamp(), event.name, int(event.outcome), user, xml))
        self._wake.set()
        return int(cur.lastrowid or 0)

    def query(self, since: float | None = None, limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, ts, event, outcome, user, sent_at FROM audit WHERE ts >= ? ORDER BY id DESC LIMIT ?",
                (since or 0.0, limit)).fetchall()
        return [{"id": r[0], "ts": r[1], "event": r[2], "outcome": r[3], "user": r[4], "sent_at": r[5]}
                for r in rows]

    def unsent(self, limit: int = 100) -> list[tuple[int, float, str]]:
        with self._lock:
            return self._db.execute("SELECT id, ts, xml FROM audit WHERE sent_at IS NULL ORDER BY id LIMIT ?",
                                    (limit,)).fetchall()

    # --- sending ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.collector and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dxgate-audit", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._lock:
            self._db.close()

    def _run(self) -> None:
        backoff = 1.0
        holder: list[socket.socket | None] = [None]
        while not self._stop.is_set():
            self._wake.clear()  # a record made from here on wakes the wait below
            try:
                self.send_pending(holder)
                backoff = 1.0
                self.last_error = ""
            except OSError as exc:
                error = f"audit collector {self.collector}:{self.port} ({self.transport}): {exc}"
                if isinstance(exc, ssl.SSLError) and error != self.last_error:
                    self._tls_failed(exc)  # once per failure streak, not per retry
                self.last_error = error
                LOGGER.warning("%s; records wait in the database (retry in %.0f s)", self.last_error, backoff)
                if holder[0] is not None:
                    holder[0].close()
                holder[0] = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            self._wake.wait(5.0)
        if holder[0] is not None:
            holder[0].close()

    def _tls_failed(self, exc: ssl.SSLError) -> None:
        """A collector that fails TLS (an unknown certificate, a wrong name) is a security
        alert (DCM 110126 Node Authentication), kept like every other record."""
        reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
        try:
            self.record(security_alert(NODE_AUTHENTICATION, who=self.source_id, outcome=Outcome.SERIOUS_FAILURE,
                                       when=self._clock(), address=self.collector,
                                       description=f"TLS to the audit collector failed: {reason}"[:200]))
        except Exception:  # the sender must go on; the log line below still says why
            LOGGER.exception("could not record the TLS failure")

    def send_pending(self, sock_holder: list[socket.socket | None]) -> int:
        """Send every unsent record, in order; returns how many were sent."""
        sent = 0
        while rows := self.unsent():
            for rid, ts, xml in rows:
                msg = syslog_message(xml, when=datetime.fromtimestamp(ts, UTC), hostname=self._hostname,
                                     procid=os.getpid())
                sock = sock_holder[0]
                if sock is None:
                    sock = sock_holder[0] = self._connect()
                if self.transport == "udp":
                    sock.send(msg)
                else:
                    sock.sendall(f"{len(msg)} ".encode() + msg)
                with self._lock:
                    self._db.execute("UPDATE audit SET sent_at = ? WHERE id = ?", (time.time(), rid))
                sent += 1
        return sent

    def _connect(self) -> socket.socket:
        if self.transport == "udp":
            sock = socket.socket(socket.AF_INET6 if ":" in self.collector else socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect((self.collector, self.port))
            return sock
        raw = socket.create_connection((self.collector, self.port), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.transport != "tls":
            return raw
        ca, cert, key = self._tls_files
        ctx = ssl.create_default_context(cafile=ca or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            ctx.load_cert_chain(cert, key or None)
        return ctx.wrap_socket(raw, server_hostname=self.collector)
