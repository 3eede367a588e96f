"""A TCP relay between dxgate and a real archive that reads the PDUs dxgate sends (an
independent view of the wire) and can cut a connection in the middle of an image."""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field

P_DATA_TF = 0x04


@dataclass
class PduProxy:
    """Listens on 127.0.0.1; each connection is relayed to `upstream_port`. `pdus` records
    (connection number, PDU type, PDU length field, PDV control bytes) for what the client sent.
    With `cut_after` = (connection, n), that connection is cut after relaying its n-th
    P-DATA-TF PDU carrying dataset (not command) data."""

    upstream_port: int
    cut_after: tuple[int, int] | None = None
    port: int = 0
    pdus: list[tuple[int, int, int, tuple[int, ...]]] = field(default_factory=list)
    connections: int = 0
    cuts: int = 0
    _server: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _socks: list[socket.socket] = field(default_factory=list)

    def start(self) -> PduProxy:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._spawn(self._accept)
        return self

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                number = self.connections
                self._socks += [client, upstream]
            self._spawn(self._from_client, number, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _recv_exact(sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return bytes(buf)

    def _from_client(self, number: int, client: socket.socket, upstream: socket.socket) -> None:
        data_pdus = 0
        try:
            while True:
                header = self._recv_exact(client, 6)
                pdu_type, length = header[0], struct.unpack(">I", header[2:6])[0]
                body = self._recv_exact(client, length)
                controls: list[int] = []
                if pdu_type == P_DATA_TF:
                    pos = 0
                    while pos < len(body):
                        item_len = struct.unpack(">I", body[pos:pos + 4])[0]
                        controls.append(body[pos + 5])
                        pos += 4 + item_len
                with self._lock:
                    self.pdus.append((number, pdu_type, length, tuple(controls)))
                upstream.sendall(header + body)
                if pdu_type == P_DATA_TF and controls and not controls[0] & 0x01:
                    data_pdus += 1
                    if self.cut_after == (number, data_pdus):
                        self.cuts += 1
                        self._close(client, upstream)  # both ends lose the connection mid-image
                        return
        except OSError:
            pass
        finally:
            self._close(client, upstream)


    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the relay thread blocked on it, ends the connection
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            self._close(src, dst)

    def data_pdu_lengths(self) -> list[int]:
        with self._lock:
            return [length for _n, t, length, _c in self.pdus if t == P_DATA_TF]

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        with self._lock:
            socks = list(self._socks)
        self._close(*socks)
