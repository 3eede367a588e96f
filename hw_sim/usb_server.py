"""Serves a SimUsbBackend's panels over a Unix socket, for the simulator process.

The other end is drivers/usb_socket (a pyusb backend). The wire (docs/detector-protocol.md,
"USB over a local socket") is framed here on its own, not imported from the driver: as with
the panel protocol, the two sides are written separately from the document.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import socketserver
import struct
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import usb.core

from hw_sim.usb_backend import SimUsbBackend

LOGGER = logging.getLogger(__name__)

_LENGTHS = struct.Struct("!II")
_MAX_HEADER = 1 << 16
_MAX_PAYLOAD = 1 << 20  # the host sends only control data


def _exact(sock: socket.socket, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _plain(ns: Any) -> dict[str, Any]:
    out = dict(vars(ns)) if isinstance(ns, SimpleNamespace) else dict(ns)
    out["extra_descriptors"] = list(out.get("extra_descriptors", []))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


class UsbSocketServer:
    """One listening Unix socket; a thread per connection; calls go to the SimUsbBackend."""

    def __init__(self, backend: SimUsbBackend, path: str | Path) -> None:
        self.backend = backend
        self.path = str(path)
        self._lock = threading.Lock()
        self._devices: dict[int, Any] = {}
        self._handles: dict[int, Any] = {}
        self._next_handle = 1
        self._connections: set[socket.socket] = set()
        Path(self.path).unlink(missing_ok=True)
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with outer._lock:
                    outer._connections.add(self.request)
                try:
                    outer._serve(self.request)
                finally:
                    with outer._lock:
                        outer._connections.discard(self.request)

        self._server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="sim-usb-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening and cut every connection (the host sees the panel gone)."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        Path(self.path).unlink(missing_ok=True)

    def _serve(self, sock: socket.socket) -> None:
        while True:
            lengths = _exact(sock, _LENGTHS.size)
            if lengths is None:
                return
            hlen, plen = _LENGTHS.unpack(lengths)
            if hlen > _MAX_HEADER or plen > _MAX_PAYLOAD:
                LOGGER.warning("usb server: oversized request (%d, %d bytes); connection closed", hlen, plen)
                return
            raw, payload = _exact(sock, hlen), _exact(sock, plen) if plen else b""
            if raw is None or payload is None:
                return
            data: bytes | memoryview
            try:
                request = json.loads(raw)
                result, data = self._dispatch(str(request["op"]), list(request["args"]), payload)
                header: dict[str, Any] = {"ok": True, "result": result}
            except usb.core.USBTimeoutError as exc:
                header, data = {"ok": False, "error": {"kind": "timeout", "message": exc.strerror,
                                                        "code": exc.backend_error_code, "errno": exc.errno}}, b""
            except usb.core.USBError as exc:
                header, data = {"ok": False, "error": {"kind": "usb", "message": exc.strerror,
                                                        "code": exc.backend_error_code, "errno": exc.errno}}, b""
            except IndexError as exc:
                header, data = {"ok": False, "error": {"kind": "index", "message": str(exc)}}, b""
            except (KeyError, TypeError, ValueError) as exc:
                header, data = {"ok": False, "error": {"kind": "usb", "message": f"Invalid parameter ({exc})",
                                                        "code": -2, "errno": errno.EINVAL}}, b""
            raw_header = json.dumps(header, separators=(",", ":")).encode()
            try:
                sock.sendall(_LENGTHS.pack(len(raw_header), len(data)) + raw_header)
                if data:
                    sock.sendall(data)
            except OSError:
                return

    def _device(self, dev_id: int) -> Any:
        with self._lock:
            dev = self._devices.get(dev_id)
        if dev is None:
            raise usb.core.USBError("No such device (it may have been disconnected)", -4, errno.ENODEV)
        return dev

    def _handle(self, handle_id: int) -> Any:
        with self._lock:
            handle = self._handles.get(handle_id)
        if handle is None:
            raise usb.core.USBError("Invalid parameter (no such handle)", -2, errno.EINVAL)
        return handle

    def _dispatch(self, op: str, args: list[Any], payload: bytes) -> tuple[Any, bytes | memoryview]:
        b = self.backend
        if op == "enumerate_devices":
            devices = list(b.enumerate_devices())
            with self._lock:
                for dev in devices:
                    self._devices[id(dev)] = dev
            return [id(dev) for dev in devices], b""
        if op == "get_device_descriptor":
            return _plain(b.get_device_descriptor(self._device(args[0]))), b""
        if op == "get_configuration_descriptor":
            return _plain(b.get_configuration_descriptor(self._device(args[0]), args[1])), b""
        if op == "get_interface_descriptor":
            return _plain(b.get_interface_descriptor(self._device(args[0]), *args[1:4])), b""
        if op == "get_endpoint_descriptor":
            return _plain(b.get_endpoint_descriptor(self._device(args[0]), *args[1:5])), b""
        if op == "open_device":
            handle = b.open_device(self._device(args[0]))
            with self._lock:
                hid, self._next_handle = self._next_handle, self._next_handle + 1
                self._handles[hid] = handle
            return hid, b""
        if op == "close_device":
            with self._lock:
                handle = self._handles.pop(args[0], None)
            if handle is not None:
                b.close_device(handle)
            return None, b""
        if op == "bulk_read":
            hid, ep, intf, length, timeout = args
            buf = bytearray(int(length))
            n = b.bulk_read(self._handle(hid), ep, intf, buf, timeout)
            return n, memoryview(buf)[:n]
        if op == "bulk_write":
            hid, ep, intf, timeout = args
            return b.bulk_write(self._handle(hid), ep, intf, payload, timeout), b""
        if op == "ctrl_transfer":
            hid, request_type, request, value, index, length, timeout = args
            if request_type & 0x80:
                buf = bytearray(int(length))
                n = b.ctrl_transfer(self._handle(hid), request_type, request, value, index, buf, timeout)
                return n, bytes(buf[:n])
            return b.ctrl_transfer(self._handle(hid), request_type, request, value, index,
                                   bytearray(payload), timeout), b""
        simple = {"set_configuration", "get_configuration", "set_interface_altsetting", "claim_interface",
                  "release_interface", "clear_halt", "reset_device"}
        if op in simple:
            return getattr(b, op)(self._handle(args[0]), *args[1:]), b""
        raise ValueError(f"unknown operation {op[:40]!r}")
