"""Socket options for every DICOM association dxgate opens or accepts.

pynetdicom never sets TCP_NODELAY; with Nagle's algorithm and delayed ACK a C-STORE of a
DX image is several times slower. Bind these handlers on every association and server.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pynetdicom import evt

LOGGER = logging.getLogger(__name__)


def _set_nodelay(event: Any) -> None:
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def nodelay_handlers() -> list[tuple[Any, Any]]:
    """Event handlers that set TCP_NODELAY as soon as a connection opens."""
    return [(evt.EVT_CONN_OPEN, _set_nodelay)]


def socket_nodelay(assoc: Any) -> bool:
    """Whether an association's socket has TCP_NODELAY set (for tests and diagnostics)."""
    sock = assoc.dul.socket.socket
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
