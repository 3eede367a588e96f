"""The systemd notify protocol, without a dependency: READY, STATUS, STOPPING, WATCHDOG.

A datagram to $NOTIFY_SOCKET (a path, or '@' for the abstract namespace); a no-op when the
variable is unset (run by hand, in tests). The watchdog pings only while every stage's
heartbeat is fresh, so a stuck forwarder or acquisition loop makes systemd restart the service.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from gateway.heartbeat import Heartbeats

LOGGER = logging.getLogger(__name__)


def notify(**fields: object) -> bool:
    """Send KEY=value lines to systemd; False when there is no notify socket."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        LOGGER.warning("sd_notify failed: %s", exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of $WATCHDOG_USEC when it is meant for this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6 / 2
    except ValueError:
        return None


class Watchdog:
    """Pings WATCHDOG=1 every interval while no stage is stale; says which one is when not."""

    def __init__(self, heartbeats: Heartbeats, interval_s: float | None = None) -> None:
        self._heartbeats = heartbeats
        self._interval = interval_s if interval_s is not None else watchdog_interval_s()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0

    def start(self) -> None:
        if self._interval is None:
            return
        self._thread = threading.Thread(target=self._run, name="dxgate-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._interval is not None
        reported: list[str] = []
        while not self._stop.wait(self._interval):
            stale = self._heartbeats.stale()
            if not stale:
                if notify(WATCHDOG=1):
                    self.pings += 1
                if reported:
                    notify(STATUS="ready")
                    reported = []
            elif stale != reported:
                LOGGER.error("stage(s) %s stopped beating: watchdog pings withheld", ", ".join(stale))
                notify(STATUS=f"stuck: {', '.join(stale)}")
                reported = stale

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
