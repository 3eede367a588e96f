"""A pyusb backend whose devices live in another process, reached over a Unix socket.

The simulator process (`python -m hw_sim`) serves its panels this way, so `dxgate run` under
test opens its panel exactly as in a room: pyusb, the real driver, only the backend below it
differs (as libusb's own backends differ per OS). The wire is described in
docs/detector-protocol.md, "USB over a local socket": each message is two big-endian uint32
lengths, a JSON header and a binary payload. Calls are independent, so each thread takes a
connection of its own from a small pool (a blocking bulk read never holds up a control
request, as with libusb). Remote errors come back as the USBError libusb would raise; a
vanished server is "No such device", like an unplugged panel.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import struct
import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

LOGGER = logging.getLogger(__name__)

_LENGTHS = struct.Struct("!II")
MAX_HEADER = 1 << 16
MAX_PAYLOAD = 1 << 27  # a 3072x3072 16-bit frame is 18 MiB
_NO_DEVICE = -4


@dataclass(frozen=True)
class _RemoteDevice:
    id: int


@dataclass(frozen=True)
class _RemoteHandle:
    id: int
    device: int


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("the USB server closed the connection")
        got += k
    return buf


def send_message(sock: socket.socket, header: dict[str, Any], payload: bytes | bytearray | memoryview = b"") -> None:
    raw = json.dumps(header, separators=(",", ":")).encode()
    sock.sendall(_LENGTHS.pack(len(raw), len(payload)) + raw)
    if payload:
        sock.sendall(payload)


def recv_message(sock: socket.socket) -> tuple[dict[str, Any], bytearray]:
    hlen, plen = _LENGTHS.unpack(_recv_exact(sock, _LENGTHS.size))
    if hlen > MAX_HEADER or plen > MAX_PAYLOAD:
        raise ConnectionError(f"USB socket message too large (header {hlen}, payload {plen} bytes)")
    header = json.loads(_recv_exact(sock, hlen))
    if not isinstance(header, dict):
        raise ConnectionError("USB socket message header is not an object")
    return header, _recv_exact(sock, plen) if plen else bytearray()


def _no_device(why: str) -> usb.core.USBError:
    return usb.core.USBError(f"No such device ({why})", _NO_DEVICE, errno.ENODEV)


class SocketUsbBackend(usb.backend.IBackend):
    """pyusb backend for the devices a USB socket server offers at `path`."""

    def __init__(self, path: str, connect_timeout_s: float = 5.0) -> None:
        super().__init__()
        self.path = str(path)
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._idle: list[socket.socket] = []

    # --- transport ---------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._connect_timeout_s)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise _no_device(f"USB server at {self.path} unreachable: {exc.strerror or exc}") from None
        sock.settimeout(None)  # calls carry their own timeouts; the server answers each
        return sock

    def _call(self, op: str, *args: Any, payload: bytes | bytearray | memoryview = b"") -> tuple[Any, bytearray]:
        with self._lock:
            sock = self._idle.pop() if self._idle else None
        if sock is None:
            sock = self._connect()
        try:
            send_message(sock, {"op": op, "args": list(args)}, payload)
            header, data = recv_message(sock)
        except (OSError, ConnectionError, ValueError) as exc:
            sock.close()
            raise _no_device(f"USB server at {self.path}: {exc}") from None
        with self._lock:
            self._idle.append(sock)
        if not header.get("ok"):
            raise self._error(header.get("error") or {})
        return header.get("result"), data

    @staticmethod
    def _error(err: dict[str, Any]) -> Exception:
        kind, message = err.get("kind"), str(err.get("message", "remote error"))
        if kind == "index":
            return IndexError(message)
        if kind == "not-implemented":
            return NotImplementedError(message)
        code, err_no = err.get("code"), err.get("errno")
        if kind == "timeout":
            return usb.core.USBTimeoutError(message, code, err_no)
        return usb.core.USBError(message, code, err_no)

    def close(self) -> None:
        """Close the idle pooled connections (the backend's owner calls it; pyusb never does).
        A later call opens a fresh one."""
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()

    def __del__(self) -> None:
        for sock in getattr(self, "_idle", []):
            sock.close()

    # --- enumeration and descriptors -------------------------------------------------------

    def enumerate_devices(self) -> Any:
        ids, _ = self._call("enumerate_devices")
        return iter([_RemoteDevice(int(i)) for i in ids])

    def get_parent(self, dev: _RemoteDevice) -> None:
        return None

    def get_device_descriptor(self, dev: _RemoteDevice) -> SimpleNamespace:
        return SimpleNamespace(**self._call("get_device_descriptor", dev.id)[0])

    def get_configuration_descriptor(self, dev: _RemoteDevice, config: int) -> SimpleNamespace:
        return SimpleNamespace(**self._call("get_configuration_descriptor", dev.id, config)[0])

    def get_interface_descriptor(self, dev: _RemoteDevice, intf: int, alt: int, config: int) -> SimpleNamespace:
        return SimpleNamespace(**self._call("get_interface_descriptor", dev.id, intf, alt, config)[0])

    def get_endpoint_descriptor(self, dev: _RemoteDevice, ep: int, intf: int, alt: int,
                                config: int) -> SimpleNamespace:
        return SimpleNamespace(**self._call("get_endpoint_descriptor", dev.id, ep, intf, alt, config)[0])

    # --- handles, configuration, interfaces ------------------------------------------------

    def open_device(self, dev: _RemoteDevice) -> _RemoteHandle:
        return _RemoteHandle(int(self._call("open_device", dev.id)[0]), dev.id)

    def close_device(self, dev_handle: _RemoteHandle) -> None:
        try:
            self._call("close_device", dev_handle.id)
        except usb.core.USBError as exc:  # a server gone: nothing left to close
            LOGGER.debug("close_device: %s", exc)

    def set_configuration(self, dev_handle: _RemoteHandle, config_value: int) -> None:
        self._call("set_configuration", dev_handle.id, config_value)

    def get_configuration(self, dev_handle: _RemoteHandle) -> int:
        return int(self._call("get_configuration", dev_handle.id)[0])

    def set_interface_altsetting(self, dev_handle: _RemoteHandle, intf: int, altsetting: int) -> None:
        self._call("set_interface_altsetting", dev_handle.id, intf, altsetting)

    def claim_interface(self, dev_handle: _RemoteHandle, intf: int) -> None:
        self._call("claim_interface", dev_handle.id, intf)

    def release_interface(self, dev_handle: _RemoteHandle, intf: int) -> None:
        self._call("release_interface", dev_handle.id, intf)

    def is_kernel_driver_active(self, dev_handle: _RemoteHandle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _RemoteHandle, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: _RemoteHandle, intf: int) -> None:
        return None

    def clear_halt(self, dev_handle: _RemoteHandle, ep: int) -> None:
        self._call("clear_halt", dev_handle.id, ep)

    def reset_device(self, dev_handle: _RemoteHandle) -> None:
        self._call("reset_device", dev_handle.id)

    # --- transfers -------------------------------------------------------------------------

    def bulk_read(self, dev_handle: _RemoteHandle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        target = memoryview(buff).cast("B")
        n, data = self._call("bulk_read", dev_handle.id, ep, intf, len(target), timeout)
        n = min(int(n), len(data), len(target))
        target[:n] = data[:n]
        return n

    def bulk_write(self, dev_handle: _RemoteHandle, ep: int, intf: int, data: Any, timeout: int) -> int:
        return int(self._call("bulk_write", dev_handle.id, ep, intf, timeout, payload=bytes(data))[0])

    def ctrl_transfer(self, dev_handle: _RemoteHandle, bmRequestType: int, bRequest: int, wValue: int,
                      wIndex: int, data: Any, timeout: int) -> int:
        buf = memoryview(data).cast("B")
        if bmRequestType & 0x80:  # device to host: the reply fills the buffer
            n, reply = self._call("ctrl_transfer", dev_handle.id, bmRequestType, bRequest, wValue, wIndex,
                                  len(buf), timeout)
            n = min(int(n), len(reply), len(buf))
            buf[:n] = reply[:n]
            return n
        return int(self._call("ctrl_transfer", dev_handle.id, bmRequestType, bRequest, wValue, wIndex,
                              len(buf), timeout, payload=bytes(buf))[0])


def open_backend(path: str, connect_timeout_s: float = 5.0) -> SocketUsbBackend:
    """Entry point `dxgate.usb_backends: socket`; options: path (the server's socket)."""
    return SocketUsbBackend(path, connect_timeout_s=connect_timeout_s)
