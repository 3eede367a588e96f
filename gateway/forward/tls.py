"""DICOM TLS (PS3.15 B.1, BCP 195): the SSL contexts of dxgate's associations.

TLS 1.2 or later only. A destination's certificate is verified against its CA file and its
host name or address; a client certificate is offered when configured (mutual TLS). The
commitment listener presents its server certificate and verifies the client certificates
archives present (requiring one when configured).

A file is named by path, or as `credential:NAME` for a systemd credential (LoadCredential=),
read from $CREDENTIALS_DIRECTORY.

A handshake that fails is told apart from a refused connection: the client socket class
records the SSL error (`HandshakeWatch`), the server context reports it to a callable
before the connection is dropped.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.errors import ForwardError

CREDENTIAL = "credential:"


def resolve(path: str) -> str:
    """A configured file: a path, or credential:NAME under $CREDENTIALS_DIRECTORY."""
    if not path.startswith(CREDENTIAL):
        return path
    name = path[len(CREDENTIAL):]
    directory = os.environ.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        raise ForwardError(f"{path}: no $CREDENTIALS_DIRECTORY (run under systemd with LoadCredential={name}:...)")
    if not name or "/" in name or name in (".", ".."):
        raise ForwardError(f"{path}: not a credential name")
    return str(Path(directory) / name)


def _load(what: str, action: Callable[[], object]) -> None:
    try:
        action()
    except (OSError, ssl.SSLError) as exc:
        raise ForwardError(f"TLS: cannot load {what}: {exc}") from exc


def reason(exc: BaseException) -> str:
    """A short, readable cause of an SSL error ('certificate verify failed: ...')."""
    verify = getattr(exc, "verify_message", None)
    if verify:
        return f"certificate verify failed: {verify}"
    text = getattr(exc, "reason", None) or str(exc)
    return str(text).replace("_", " ").lower()


class HandshakeWatch:
    """The SSL error (if any) of one outgoing connection."""

    def __init__(self) -> None:
        self.error: str | None = None

    def socket_class(self) -> type[ssl.SSLSocket]:
        watch = self

        class _Watched(ssl.SSLSocket):
            def connect(self, address: Any) -> None:
                try:
                    super().connect(address)
                except ssl.SSLError as exc:
                    watch.error = reason(exc)
                    raise

            def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
                try:
                    return super().recv(buflen, flags)
                except ssl.SSLError as exc:  # TLS 1.3: the server refuses our certificate after the handshake
                    watch.error = watch.error or reason(exc)
                    raise

        return _Watched


def client_context(*, ca_file: str, cert_file: str = "", key_file: str = "",
                   watch: HandshakeWatch | None = None) -> ssl.SSLContext:
    """A verifying client context: TLS 1.2+, the peer's certificate checked against ca_file
    and its name; a client certificate offered when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(f"CA file {ca_file}", lambda: ctx.load_verify_locations(cafile=resolve(ca_file)))
    if cert_file:
        _load(f"client certificate {cert_file}",
              lambda: ctx.load_cert_chain(resolve(cert_file), resolve(key_file) if key_file else None))
    if watch is not None:
        ctx.sslsocket_class = watch.socket_class()
    return ctx


class _ServerContext(ssl.SSLContext):
    """A server context that bounds the handshake and reports its failure before the
    connection is dropped (pynetdicom's server drops it silently)."""

    on_failure: Callable[[str, str], None] | None = None  # (peer address, reason)
    handshake_timeout_s: float = 10.0

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        try:
            address = str(sock.getpeername()[0])
        except OSError:
            address = "?"
        previous = sock.gettimeout()
        sock.settimeout(self.handshake_timeout_s)  # a peer that never speaks cannot hold the listener
        try:
            wrapped = super().wrap_socket(sock, *args, **kwargs)
        except (ssl.SSLError, OSError) as exc:
            if self.on_failure is not None:
                self.on_failure(address, reason(exc))
            sock.close()
            raise
        wrapped.settimeout(previous)
        return wrapped


def server_context(*, cert_file: str, key_file: str, ca_file: str = "", require_client_cert: bool = False,
                   on_failure: Callable[[str, str], None] | None = None,
                   handshake_timeout_s: float = 10.0) -> ssl.SSLContext:
    """The listener's context: TLS 1.2+, its certificate; client certificates verified
    against ca_file when presented, and required when asked."""
    ctx = _ServerContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(f"server certificate {cert_file}", lambda: ctx.load_cert_chain(resolve(cert_file), resolve(key_file)))
    if ca_file:
        _load(f"CA file {ca_file}", lambda: ctx.load_verify_locations(cafile=resolve(ca_file)))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ForwardError("TLS: requiring client certificates needs a CA file to verify them")
    ctx.on_failure = on_failure
    ctx.handshake_timeout_s = handshake_timeout_s
    return ctx
